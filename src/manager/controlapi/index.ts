// The control API: the Control gRPC service the CLI calls on any manager (followers forward to
// the leader). Validation first (INVALID_ARGUMENT naming the field and rule, nothing written),
// then one store transaction.
//
// Wiring on a manager:
//   const local = createControlServer({ store, nodeId, raftMembers });
//   server.addService(ControlService, forwardingControl(local, () => route, { authorize }));
export { ControlApi, REMOVE_TASKS_BATCH, type ControlApiDeps, type RaftMemberInfo } from './api';
export {
  createControlServer,
  requireManagerCertificate,
  toControlError,
  unaryHandler,
  type Authorize,
  type ControlServerDeps,
} from './server';
export {
  forwardingControl,
  FORWARDED_METADATA_KEY,
  leaderClientFor,
  NO_LEADER_MESSAGE,
  type ForwardingOptions,
  type LeaderRoute,
} from './forward';
export {
  MAX_NAME_LENGTH,
  MAX_REPLICAS,
  MIN_MEMORY_BYTES,
  validateClusterSpec,
  validateImage,
  validateName,
  validateNetworkSpec,
  validateNodeSpec,
  validateServiceSpec,
} from './validate';
export { defaultUpdateConfig, withServiceDefaults } from './defaults';
