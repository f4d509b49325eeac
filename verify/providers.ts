/** Prints the matmul providers this machine can run, one per line, for verify:torch's loop. */
import { availableProviders } from '../src/model/provider.js';

console.log(availableProviders().join('\n'));
