// User overlay networks on the namespace lab with the oci runtime (runc): the same checks as on
// Docker, the tasks plumbed through the pid runc reports and resolving through the bundle's
// /etc/resolv.conf.
import { networksSuite } from './lab-networks-suite';

networksSuite('nftables', 'oci');
