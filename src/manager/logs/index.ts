// Service logs through the managers: the leader's broker and the followers' relay.
export { createLogBroker, tasksOfTarget, MAX_ENTRIES_PER_MESSAGE, MAX_SUBSCRIPTIONS } from './broker';
export type { LogBroker, LogBrokerOptions, LogTarget } from './broker';
export { forwardingLogs } from './forward';
