// Package shm moves variable-length records between two processes through
// single-producer/single-consumer rings in shared memory.
//
// A ring lives in one memfd (memfd_create) mapped by both sides. The
// producer appends records and advances head; the consumer reads them in
// place and advances tail. Both counters only grow (they are byte offsets
// modulo 2^64); the ring holds head - tail bytes. A sleeping side is woken
// through an eventfd, and only when it said it was going to sleep, so a
// busy ring makes no system calls and an idle one uses no CPU.
//
// Layout of the shared region (all integers little-endian, as the host):
//
//	offset  size  field
//	     0     8  magic "ZCRING01"
//	     8     8  capacity of the data area in bytes (a power of two)
//	    64     8  head: bytes ever written          (producer's cache line)
//	   128     8  tail: bytes ever consumed         (consumer's cache line)
//	   192     4  consumer sleeping: 1 while the consumer waits for data
//	   256     4  producer sleeping: 1 while the producer waits for space
//	  4096     …  data area, capacity bytes
//
// Records in the data area, each starting at an offset that is a multiple
// of 8:
//
//	+-----------+---------------------+---------+
//	| len: u32  | payload: len bytes  | padding |   padding to a multiple of 8
//	+-----------+---------------------+---------+
//
// A record never wraps around the end of the data area: when it does not
// fit before the end, the producer writes the wrap marker (len =
// 0xFFFFFFFF) and continues at offset 0. A record is published by the
// store of head that follows it, so the consumer never sees a torn record;
// a full ring makes the producer fail (TryWrite) or wait (Write), never
// drop.
//
// Wake-ups follow the classic two-flag protocol with sequentially
// consistent atomics: a side that finds nothing to do sets its sleeping
// flag, checks again, and only then blocks on its eventfd; the other side
// stores its counter and then reads the flag. At least one of them sees the
// other's store, so no wake-up is lost.
//
// A Ring is used by exactly one producer and one consumer (in any two
// processes or goroutines); its Producer and Consumer methods are not safe
// for concurrent use by several producers or several consumers.
package shm
