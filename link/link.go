package link

import (
	"errors"
	"fmt"
	"os"

	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/shm"
)

// firstFd is the descriptor of the first of exec.Cmd.ExtraFiles in the
// child.
const firstFd = 3

// fdsPerRing is the number of descriptors of one ring: memfd, data
// eventfd, space eventfd (shm.Ring.Files).
const fdsPerRing = 3

// Rings is the set of rings between the agent and one worker.
type Rings struct {
	loops int
	rings []*shm.Ring // in ring order: loops, housekeeping, from the agent
}

// Create makes the rings of worker id (0 to nodemsg.MaxWorkers-1) with
// loops event loops, each ring with a data area of ringSize bytes.
func Create(worker, loops, ringSize int) (*Rings, error) {
	if worker < 0 || worker >= nodemsg.MaxWorkers {
		return nil, fmt.Errorf("link: worker %d is outside 0..%d", worker, nodemsg.MaxWorkers-1)
	}
	if loops < 1 {
		return nil, fmt.Errorf("link: %d loops", loops)
	}
	l := &Rings{loops: loops}
	for i := range loops + 2 {
		r, err := shm.Create(fmt.Sprintf("zenconn-w%d-%d", worker, i), ringSize)
		if err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("link: ring %d: %w", i, err)
		}
		l.rings = append(l.rings, r)
	}
	return l, nil
}

// Attach maps, in a worker process started with Files as its ExtraFiles,
// the rings of a worker with loops event loops. The rings take ownership
// of the descriptors.
func Attach(loops int) (*Rings, error) {
	return attach(loops, func(n int) int { return firstFd + n })
}

// attach maps the rings from descriptor fd(n), n counting the descriptors
// in the order of Files.
func attach(loops int, fd func(n int) int) (*Rings, error) {
	if loops < 1 {
		return nil, errors.New("link: --loops must be set by the agent")
	}
	l := &Rings{loops: loops}
	for i := range loops + 2 {
		n := fdsPerRing * i
		r, err := shm.Attach(fd(n), fd(n+1), fd(n+2))
		if err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("link: ring %d: %w", i, err)
		}
		l.rings = append(l.rings, r)
	}
	return l, nil
}

// Files returns duplicates of every ring's descriptors, in the order
// Attach expects them, for exec.Cmd.ExtraFiles. The caller closes them
// once the child has started.
func (l *Rings) Files() ([]*os.File, error) {
	files := make([]*os.File, 0, fdsPerRing*len(l.rings))
	for _, r := range l.rings {
		fs, err := r.Files()
		if err != nil {
			CloseFiles(files)
			return nil, err
		}
		files = append(files, fs...)
	}
	return files, nil
}

// CloseFiles closes files returned by Files.
func CloseFiles(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// Loops returns the number of event loops, each with its ring.
func (l *Rings) Loops() int { return l.loops }

// Loop returns the ring from event loop i (0 to Loops()-1) to the agent.
func (l *Rings) Loop(i int) *shm.Ring { return l.rings[:l.loops][i] }

// Housekeeping returns the ring from the worker's housekeeping goroutine
// (Ready and Stats records) to the agent.
func (l *Rings) Housekeeping() *shm.Ring { return l.rings[l.loops] }

// ToAgent returns every ring to the agent: the loops' rings, then the
// housekeeping ring. The slice is the Rings' own: do not modify it.
func (l *Rings) ToAgent() []*shm.Ring { return l.rings[: l.loops+1 : l.loops+1] }

// FromAgent returns the ring from the agent to the worker.
func (l *Rings) FromAgent() *shm.Ring { return l.rings[l.loops+1] }

// Close unmaps every ring and closes its descriptors.
func (l *Rings) Close() error {
	var errs []error
	for _, r := range l.rings {
		errs = append(errs, r.Close())
	}
	l.rings = nil
	return errors.Join(errs...)
}
