package shm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Layout constants; see the package documentation.
const (
	headerSize   = 4096
	offMagic     = 0
	offCapacity  = 8
	offHead      = 64
	offTail      = 128
	offConsSleep = 192
	offProdSleep = 256

	recordHeader = 4
	wrapMarker   = 0xFFFFFFFF

	// MinCapacity and MaxCapacity bound a ring's data area.
	MinCapacity = 4096
	MaxCapacity = 1 << 30
)

var magic = [8]byte{'Z', 'C', 'R', 'I', 'N', 'G', '0', '1'}

// Errors returned by rings.
var (
	ErrFull     = errors.New("shm: ring full")
	ErrTooLarge = errors.New("shm: record larger than the ring accepts")
	ErrCorrupt  = errors.New("shm: corrupt ring")
)

// Ring is one shared-memory ring and its two wake-up eventfds.
type Ring struct {
	mem      []byte // whole mapping (or test buffer)
	data     []byte // data area
	capacity uint64
	mask     uint64

	head, tail           *atomic.Uint64
	consSleep, prodSleep *atomic.Uint32

	memFd   int // memfd, -1 for an in-process ring
	dataFd  int // eventfd: records available
	spaceFd int // eventfd: space available
	mapped  bool
	// dataWait and spaceWait are dataFd and spaceFd as files of the
	// runtime's poller, which Wait and Write sleep on (see sleep); they
	// own the descriptors.
	dataWait, spaceWait *os.File

	interrupted atomic.Bool // set by Interrupt: Wait returns false
}

// Interrupt makes the consumer's current and later Waits return false at
// once, so a goroutine blocked in Wait(-1) can be stopped. Safe from any
// goroutine.
func (r *Ring) Interrupt() {
	r.interrupted.Store(true)
	wake(r.dataFd)
}

// Create makes a ring with a data area of capacity bytes (a power of two
// between MinCapacity and MaxCapacity) in a new memfd, with its two
// eventfds. name shows in /proc/PID/fd.
func Create(name string, capacity int) (*Ring, error) {
	if capacity < MinCapacity || capacity > MaxCapacity || bits.OnesCount(uint(capacity)) != 1 {
		return nil, fmt.Errorf("shm: capacity %d is not a power of two in [%d, %d]", capacity, MinCapacity, MaxCapacity)
	}
	memFd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("shm: memfd_create: %w", err)
	}
	fds := []int{memFd}
	fail := func(err error) (*Ring, error) {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		return nil, err
	}
	if err := unix.Ftruncate(memFd, int64(headerSize+capacity)); err != nil {
		return fail(fmt.Errorf("shm: ftruncate: %w", err))
	}
	dataFd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fail(fmt.Errorf("shm: eventfd: %w", err))
	}
	fds = append(fds, dataFd)
	spaceFd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fail(fmt.Errorf("shm: eventfd: %w", err))
	}
	fds = append(fds, spaceFd)
	mem, err := unix.Mmap(memFd, 0, headerSize+capacity, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("shm: mmap: %w", err))
	}
	copy(mem[offMagic:], magic[:])
	binary.LittleEndian.PutUint64(mem[offCapacity:], uint64(capacity))
	r := newRing(mem, memFd, dataFd, spaceFd)
	r.mapped = true
	return r, nil
}

// Attach maps a ring created by Create in another process from its three
// descriptors (see Files). The ring takes ownership of the descriptors.
func Attach(memFd, dataFd, spaceFd int) (*Ring, error) {
	var st unix.Stat_t
	if err := unix.Fstat(memFd, &st); err != nil {
		return nil, fmt.Errorf("shm: fstat: %w", err)
	}
	if st.Size < headerSize+MinCapacity || st.Size > headerSize+MaxCapacity {
		return nil, fmt.Errorf("shm: %d bytes is not a ring", st.Size)
	}
	mem, err := unix.Mmap(memFd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shm: mmap: %w", err)
	}
	capacity := binary.LittleEndian.Uint64(mem[offCapacity:])
	if [8]byte(mem[offMagic:offMagic+8]) != magic || capacity != uint64(st.Size)-headerSize {
		_ = unix.Munmap(mem)
		return nil, errors.New("shm: not a ZenConn ring (bad magic or size)")
	}
	r := newRing(mem, memFd, dataFd, spaceFd)
	r.mapped = true
	return r, nil
}

// newRing wraps a region laid out as described in the package doc; mem
// must be 8-byte aligned and headerSize plus a power of two long.
func newRing(mem []byte, memFd, dataFd, spaceFd int) *Ring {
	capacity := uint64(len(mem) - headerSize)
	return &Ring{
		mem:       mem,
		data:      mem[headerSize:],
		capacity:  capacity,
		mask:      capacity - 1,
		head:      (*atomic.Uint64)(unsafe.Pointer(&mem[offHead])),
		tail:      (*atomic.Uint64)(unsafe.Pointer(&mem[offTail])),
		consSleep: (*atomic.Uint32)(unsafe.Pointer(&mem[offConsSleep])),
		prodSleep: (*atomic.Uint32)(unsafe.Pointer(&mem[offProdSleep])),
		memFd:     memFd,
		dataFd:    dataFd,
		spaceFd:   spaceFd,
		dataWait:  pollable(dataFd, "shm-data-wait"),
		spaceWait: pollable(spaceFd, "shm-space-wait"),
	}
}

// pollable returns the eventfd fd (non-blocking, as every ring's eventfds
// are made) as a file of the runtime's poller, which then owns it; nil
// for no descriptor. The ring keeps using the number for its writes.
func pollable(fd int, name string) *os.File {
	if fd < 0 {
		return nil
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), name)
}

// Files returns duplicates of the ring's descriptors (memfd, data eventfd,
// space eventfd) for another process, e.g. in exec.Cmd.ExtraFiles. The
// caller closes them once the child has started.
func (r *Ring) Files() ([]*os.File, error) {
	var out []*os.File
	for i, fd := range []int{r.memFd, r.dataFd, r.spaceFd} {
		d, err := unix.Dup(fd)
		if err != nil {
			for _, f := range out {
				_ = f.Close()
			}
			return nil, fmt.Errorf("shm: dup: %w", err)
		}
		out = append(out, os.NewFile(uintptr(d), [...]string{"shm-ring", "shm-data", "shm-space"}[i]))
	}
	return out, nil
}

// Capacity returns the size of the data area in bytes.
func (r *Ring) Capacity() int { return int(r.capacity) }

// MaxRecord returns the largest record payload the ring accepts: a quarter
// of the data area, so that a record and the waste of a wrap always fit.
func (r *Ring) MaxRecord() int { return int(r.capacity/4) - recordHeader }

// Len returns the bytes currently held (records, headers, padding).
func (r *Ring) Len() int { return int(r.head.Load() - r.tail.Load()) }

// Published returns the producer's published position: the bytes ever
// made visible to the consumer.
func (r *Ring) Published() uint64 { return r.head.Load() }

// Consumed returns the consumer's position: the bytes ever read. Read
// advances it after calling fn for every record of its batch, so
// Consumed() >= p means every record published before position p has
// been handled.
func (r *Ring) Consumed() uint64 { return r.tail.Load() }

// Close unmaps the ring and closes its descriptors.
func (r *Ring) Close() error {
	var err error
	if r.mapped {
		err = unix.Munmap(r.mem)
		r.mapped = false
	}
	for i, fd := range []int{r.memFd, r.dataFd, r.spaceFd} {
		switch f := []*os.File{nil, r.dataWait, r.spaceWait}[i]; {
		case f != nil:
			_ = f.Close()
		case fd >= 0:
			_ = unix.Close(fd)
		}
	}
	r.memFd, r.dataFd, r.spaceFd = -1, -1, -1
	r.dataWait, r.spaceWait = nil, nil
	return err
}

func align8(n uint64) uint64 { return (n + 7) &^ 7 }

var one = [8]byte{1}

// wake adds to an eventfd counter; a full counter (EAGAIN) is already
// readable, which is all a wake-up needs.
func wake(fd int) {
	if fd >= 0 {
		_, _ = unix.Write(fd, one[:])
	}
}

// sleep waits until the eventfd f is readable or timeout passes
// (negative: no limit), then resets its counter. It waits in the
// runtime's poller, not in a blocking system call: a goroutine blocked in
// a system call keeps its processor until the runtime's monitor takes it
// back, up to 10 ms later on an idle process, and a goroutine woken
// meanwhile (a delivery) may wait that long for a processor.
func sleep(f *os.File, timeout time.Duration) {
	if f == nil {
		return
	}
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	if f.SetReadDeadline(deadline) != nil {
		return
	}
	var buf [8]byte
	_, _ = f.Read(buf[:])
}

// WakeFd returns the eventfd that becomes readable when records arrive,
// for a consumer that waits in its own poller (epoll) rather than in Wait.
// After it fires, call Consumer.Rearm.
func (r *Ring) WakeFd() int { return r.dataFd }

// Producer appends records to a ring. It is owned by one goroutine.
type Producer struct {
	r         *Ring
	head      uint64 // local head: written but maybe not published
	tailCache uint64
	pending   bool

	releasedHead uint64    // head at the last Release that freed pages
	releasedAt   time.Time // and when
}

// Producer returns the ring's producer side. Only one may exist.
func (r *Ring) Producer() *Producer {
	return &Producer{r: r, head: r.head.Load(), tailCache: r.tail.Load()}
}

// space reports whether total more bytes fit, refreshing the cached tail
// only when needed.
func (p *Producer) space(total uint64) bool {
	if p.head+total-p.tailCache <= p.r.capacity {
		return true
	}
	p.tailCache = p.r.tail.Load()
	return p.head+total-p.tailCache <= p.r.capacity
}

// footprint returns the bytes a record of n bytes takes at the current
// head: the record, and the rest of the data area when it must wrap.
func (p *Producer) footprint(n int) (need, total uint64) {
	need = align8(uint64(recordHeader + n))
	total = need
	if toEnd := p.r.capacity - p.head&p.r.mask; need > toEnd {
		total += toEnd
	}
	return need, total
}

// TryWrite appends one record without publishing it (see Flush). It
// returns ErrFull when the ring has no room now, ErrTooLarge for a record
// over MaxRecord.
func (p *Producer) TryWrite(rec []byte) error {
	r := p.r
	if len(rec) > r.MaxRecord() {
		return ErrTooLarge
	}
	need, total := p.footprint(len(rec))
	if !p.space(total) {
		return ErrFull
	}
	pos := p.head & r.mask
	toEnd := r.capacity - pos
	if need > toEnd {
		binary.LittleEndian.PutUint32(r.data[pos:], wrapMarker)
		p.head += toEnd
		pos = 0
	}
	binary.LittleEndian.PutUint32(r.data[pos:], uint32(len(rec)))
	copy(r.data[pos+recordHeader:], rec)
	p.head += need
	p.pending = true
	return nil
}

// Flush publishes the records written so far and wakes the consumer if it
// sleeps.
func (p *Producer) Flush() {
	if !p.pending {
		return
	}
	p.pending = false
	p.r.head.Store(p.head)
	if p.r.consSleep.Load() != 0 {
		wake(p.r.dataFd)
	}
}

// Write appends and publishes one record, waiting up to timeout (negative:
// no limit) for room. It returns ErrFull when the time ran out: a record is
// never dropped without the caller knowing.
func (p *Producer) Write(rec []byte, timeout time.Duration) error {
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		err := p.TryWrite(rec)
		if err != ErrFull {
			if err == nil {
				p.Flush()
			}
			return err
		}
		p.Flush() // what is written must be visible for the consumer to drain
		left := time.Duration(-1)
		if timeout >= 0 {
			if left = time.Until(deadline); left <= 0 {
				return ErrFull
			}
		}
		p.r.prodSleep.Store(1)
		if _, total := p.footprint(len(rec)); !p.space(total) {
			sleep(p.r.spaceWait, left)
		}
		p.r.prodSleep.Store(0)
	}
}

// ReleaseEvery is the shortest time between two Releases of a ring's pages.
const ReleaseEvery = 10 * time.Second

// Release gives the operating system back the pages of the ring's free
// space (read by the consumer, not yet written again), when at least a
// quarter of the ring was written since the last release and that was
// ReleaseEvery ago or more; it returns the bytes released.
//
// A page of the ring stays in memory once written, and the producer walks
// round all of them: without releases every ring would soon hold its whole
// capacity, however little is queued. A released page is a hole of the
// memfd; the producer's next write there takes a fresh zeroed page. Its
// owner calls Release from time to time (once a second, say): a busy ring
// takes back its pages at most once per ReleaseEvery, a quiet one holds
// about what is queued.
func (p *Producer) Release(now time.Time) int {
	r := p.r
	if r.memFd < 0 || p.head-p.releasedHead < r.capacity/4 || now.Sub(p.releasedAt) < ReleaseEvery {
		return 0
	}
	p.releasedHead, p.releasedAt = p.head, now
	// The free space is [head, tail+capacity): the consumer reads only
	// before head, and only this producer writes from it on. tail only
	// grows, so the one read here is safe.
	from, to := p.head, r.tail.Load()+r.capacity
	n := 0
	for from < to {
		pos := from & r.mask
		seg := min(to-from, r.capacity-pos)
		n += punch(r.memFd, headerSize+pos, seg)
		from += seg
	}
	return n
}

// punch frees the whole pages of the file's bytes [off, off+n) and returns
// the bytes freed; the partial pages at either end are left alone.
func punch(fd int, off, n uint64) int {
	ps := uint64(os.Getpagesize())
	start, end := (off+ps-1)/ps*ps, (off+n)/ps*ps
	if end <= start {
		return 0
	}
	if unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(start), int64(end-start)) != nil {
		return 0
	}
	return int(end - start)
}

// Consumer reads records from a ring. It is owned by one goroutine.
type Consumer struct {
	r    *Ring
	tail uint64
}

// Consumer returns the ring's consumer side. Only one may exist.
func (r *Ring) Consumer() *Consumer {
	return &Consumer{r: r, tail: r.tail.Load()}
}

// Read calls fn for every record published so far, in order, then frees
// their space (waking the producer if it waits for room). rec is valid
// only during fn. It returns the number of records read; ErrCorrupt means
// the shared region holds something no producer writes, and the records
// before it were delivered.
func (c *Consumer) Read(fn func(rec []byte)) (int, error) {
	r := c.r
	head := r.head.Load()
	start := c.tail
	n := 0
	var err error
	for c.tail != head {
		if head-c.tail > r.capacity {
			err = ErrCorrupt
			break
		}
		pos := c.tail & r.mask
		l := binary.LittleEndian.Uint32(r.data[pos:])
		if l == wrapMarker {
			c.tail += r.capacity - pos
			continue
		}
		need := align8(uint64(recordHeader) + uint64(l))
		if uint64(l) > uint64(r.MaxRecord()) || pos+need > r.capacity || c.tail+need > head {
			err = ErrCorrupt
			break
		}
		fn(r.data[pos+recordHeader : pos+recordHeader+uint64(l)])
		c.tail += need
		n++
	}
	if c.tail != start {
		r.tail.Store(c.tail)
		if r.prodSleep.Load() != 0 {
			wake(r.spaceFd)
		}
	}
	return n, err
}

// Wait blocks until records are available, timeout passes (negative: no
// limit) or the ring is interrupted, and reports whether records are
// available. A wake-up left over from an earlier round does not end the
// wait early.
func (c *Consumer) Wait(timeout time.Duration) bool {
	r := c.r
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		if r.head.Load() != c.tail {
			return true
		}
		if r.interrupted.Load() {
			return false
		}
		left := time.Duration(-1)
		if timeout >= 0 {
			if left = time.Until(deadline); left <= 0 {
				return false
			}
		}
		r.consSleep.Store(1)
		if r.head.Load() == c.tail {
			sleep(r.dataWait, left)
		}
		r.consSleep.Store(0)
	}
}

// Sleep announces that the consumer is about to wait on WakeFd in its own
// poller, and reports false when records arrived meanwhile (then do not
// wait: Read). Call Rearm after waking.
func (c *Consumer) Sleep() bool {
	c.r.consSleep.Store(1)
	if c.r.head.Load() != c.tail {
		c.r.consSleep.Store(0)
		return false
	}
	return true
}

// Rearm clears the sleeping flag and resets the wake-up eventfd after the
// consumer's poller reported WakeFd readable.
func (c *Consumer) Rearm() {
	c.r.consSleep.Store(0)
	var buf [8]byte
	_, _ = unix.Read(c.r.dataFd, buf[:])
}
