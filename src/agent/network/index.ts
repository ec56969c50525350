// Overlay networks on this host: bridge + VXLAN per network, endpoint plumbing, egress NAT.
export {
  CommandError,
  OVERLAY_MTU,
  OverlayDriver,
  VXLAN_PORT,
  bridgeName,
  hostVethName,
  macForIp,
  nftTableName,
  planForwarding,
  vniOfName,
  vxlanName,
  type AttachRequest,
  type ForwardingPlan,
  type OverlayDriverOptions,
  type OverlayNetworkConfig,
  type RemoteEndpoint,
} from './overlay';
