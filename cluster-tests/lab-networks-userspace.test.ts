// User overlay networks on the namespace lab with the userspace proxy (`cluster daemon --lb
// userspace`): VIPs on the ports the service declares, published ports on every host.
import { networksSuite } from './lab-networks-suite';

networksSuite('userspace');
