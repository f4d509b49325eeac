import { setFlagsFromString } from 'node:v8';

/**
 * Lets V8's old generation grow to 4x its live size (default: about 1.2x) before a full mark.
 * Every 4 MB tensor frame and every 64 KB socket read is a fresh ArrayBuffer; their young-
 * generation collections promote a little each time, and with the default headroom each one
 * started a mark of the whole heap: tens per second on helper threads, taking the cores the
 * gradients need (bench:lan's loopback step went from 4.7 to 3.1 s). The JS heaps here are 30 to
 * 50 MB, so the cost is at most about 150 MB of garbage kept a little longer.
 */
setFlagsFromString('--heap-growing-percent=300');
