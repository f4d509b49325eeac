import { setFlagsFromString } from 'node:v8';

/**
 * Lets V8's old generation grow to 4x its live size (default: about 1.2x) before a full mark.
 * Every 4 MB tensor frame and every 64 KB socket read is a fresh ArrayBuffer; their young-
 * generation collections promote a little each time, and with the default headroom each one
 * started a mark of the whole heap: tens per second on helper threads, taking the cores the
 * gradients need (a node's step went from 4.7 to 3.7 s on loopback). The JS heaps here are tens
 * of MB, so the cost is a few tens of MB at most.
 */
setFlagsFromString('--heap-growing-percent=300');
