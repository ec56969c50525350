// Service discovery: the embedded DNS server and its wire format.
export {
  DEFAULT_DOMAIN,
  DnsServer,
  RECORD_TTL_SECONDS,
  type DnsRecordSet,
  type DnsServerOptions,
  type ServiceRecord,
  type Upstream,
  upstreamsFromResolvConf,
} from './server';
export { decodeResponse, encodeQuery } from './message';
