package store

import "github.com/cockroachdb/pebble/v2/vfs"

// noPreallocFS is the filesystem the store's databases write through:
// Pebble's own, except that files are never preallocated.
//
// Pebble preallocates each write-ahead log in blocks of 110 % of the
// memtable (4.4 MiB for the log database, 17.6 MiB for the index), by a
// fallocate at the log's second write and each time it passes a block.
// That space is taken behind the writer's back (space.go counts what it
// commits), and on tmpfs a fallocate that does not fit takes every free
// page before it fails and gives them back: a write-ahead log write of the
// other database at that moment meets ENOSPC, and Pebble exits the
// process. Without preallocation a log grows by what is written to it,
// which the free-space check covers.
type noPreallocFS struct{ vfs.FS }

func (fs noPreallocFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return noPrealloc(fs.FS.Create(name, category))
}

func (fs noPreallocFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return noPrealloc(fs.FS.OpenReadWrite(name, category, opts...))
}

func (fs noPreallocFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return noPrealloc(fs.FS.ReuseForWrite(oldname, newname, category))
}

func (fs noPreallocFS) Unwrap() vfs.FS { return fs.FS }

// noPreallocFile is a file whose Preallocate does nothing.
type noPreallocFile struct{ vfs.File }

func (noPreallocFile) Preallocate(offset, length int64) error { return nil }

func noPrealloc(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return noPreallocFile{f}, nil
}
