// User overlay networks on the namespace lab with the nftables data plane (the default).
import { networksSuite } from './lab-networks-suite';

networksSuite('nftables');
