package static

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// The file cache keeps small static files in memory as prepared responses,
// so that a request for one is answered on its event loop in one write,
// without a hand-over to a worker and without an allocation. The package
// doc says what a loop answers from it and how entries are revalidated.
const (
	// MaxFile is the largest file kept in memory: it covers the
	// stylesheets, scripts and pages of a typical app; bigger files are
	// streamed by the file workers. A loop's response buffer grown past
	// twice this size is not worth keeping.
	MaxFile = 256 << 10
	// fileCacheBudget bounds the bytes held by the cache (bodies of every
	// encoding, heads, and fileEntryOverhead per entry). Past it, the
	// entries used longest ago are dropped.
	fileCacheBudget = 64 << 20
	// fileRevalidate is how long an entry is served before its file is
	// checked again.
	fileRevalidate = int64(time.Second)
	// fileEntryOverhead is what an entry costs besides its bytes: the
	// struct, its map slot and strings.
	fileEntryOverhead = 512
	// Compression follows fasthttp's FS: a file is compressed when gzip
	// shrinks its first 4 KiB below 80 %, at the default level.
	compressSample   = 4096
	compressMinRatio = 0.8
	compressLevel    = fasthttp.CompressDefaultCompression
)

// fileEncoding indexes a cached file's variants.
type fileEncoding uint8

const (
	encIdentity fileEncoding = iota
	encGzip
	encBrotli
	numEncodings
)

var encodingNames = [numEncodings]string{"", "gzip", "br"}

// fileVariant is one encoding of a cached file, ready to send: the header
// lines that follow Date, and the body. Immutable once built.
type fileVariant struct {
	head        []byte // Content-Type … ETag, each line ending in CRLF
	notModified []byte // the header lines of a 304 after Date: [Vary] ETag
	body        []byte
}

// fileEntry is one cached file. Its fields other than the atomics never
// change once it is in the cache: a changed file gets a new entry, so the
// bytes of an entry may be written to sockets from any goroutine.
type fileEntry struct {
	key     string // the URL path: "/", "/app.js", "/docs/"
	rel     string // the file, relative to the public folder
	size    int64
	mtime   int64 // ns
	ino     uint64
	modTime time.Time // mtime truncated to seconds, for If-Modified-Since
	etag    string    // W/"<size>-<mtime>" in hex, as etagFor
	lastMod []byte    // the Last-Modified value
	// compressed is set when the gzip and br variants exist.
	compressed bool
	// stream marks a file over maxFile: fasthttp's FS streams it, and the
	// entry only spares the file workers from opening it on every request
	// until its next check. The loops never answer from it.
	stream bool
	v      [numEncodings]fileVariant
	mem    int64 // bytes charged to the budget

	checked atomic.Int64 // clock (ns) of the last check against the file
	used    atomic.Int64 // clock (ns) of the last request, for eviction
}

// fileCache maps URL paths to entries. Safe for concurrent use: loops read
// it, file workers fill it.
type fileCache struct {
	root    string // the public folder, absolute
	maxFile int64
	budget  int64

	mu  sync.RWMutex
	m   map[string]*fileEntry
	mem int64 // bytes charged, guarded by mu
}

func newFileCache(root string) *fileCache {
	return &fileCache{root: root, maxFile: MaxFile, budget: fileCacheBudget, m: make(map[string]*fileEntry)}
}

// cachePath returns the path of a request target when the file cache may
// answer for it as it is: origin form, printable ASCII without '%', '\',
// ':' or '#', and no empty, "." or dot-prefixed segment. Such a path needs
// no decoding or normalizing (fasthttp's Path returns it unchanged) and
// names no dotfile; any other target goes to the file workers, which
// decode, normalize and refuse as before.
func cachePath(uri []byte) ([]byte, bool) {
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		uri = uri[:i]
	}
	if len(uri) == 0 || uri[0] != '/' {
		return nil, false
	}
	for i, ch := range uri {
		switch {
		case ch <= ' ' || ch >= 0x7f || ch == '%' || ch == '\\' || ch == ':' || ch == '#':
			return nil, false
		case ch == '/' && i+1 < len(uri) && (uri[i+1] == '/' || uri[i+1] == '.'):
			return nil, false
		}
	}
	return uri, true
}

// get returns the entry for path, or nil.
func (fc *fileCache) get(path []byte) *fileEntry {
	fc.mu.RLock()
	e := fc.m[string(path)]
	fc.mu.RUnlock()
	return e
}

// errNotCacheable: the file exists but is served by fasthttp's FS.
var errNotCacheable = errors.New("static: file not cacheable")

// load returns the entry for key (a path accepted by cachePath) after
// checking it against its file: the current entry when the file is
// unchanged, a new one read from the file otherwise. It returns nil when
// the file is gone, is not a regular file, or changed while being read
// (the entry, if any, is then dropped), and when it is over maxFile (a
// stream entry then remembers that until the next check is due). It reads
// the disk: file workers only.
func (fc *fileCache) load(key string, now int64) *fileEntry {
	if e := fc.get([]byte(key)); e != nil && e.stream {
		if d := now - e.checked.Load(); d >= 0 && d < fileRevalidate {
			return nil
		}
	}
	rel := key[1:]
	if rel == "" || rel[len(rel)-1] == '/' {
		rel += "index.html"
	}
	e, err := fc.read(key, rel, now)
	if err != nil {
		fc.remove(key)
		return nil
	}
	if e.stream {
		return nil
	}
	return e
}

func (fc *fileCache) read(key, rel string, now int64) (*fileEntry, error) {
	// Confined to the folder as fasthttp's FS is: neither ".." nor a
	// symbolic link leads outside it.
	f, err := os.OpenInRoot(fc.root, rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errNotCacheable
	}
	mtime, ino := fi.ModTime().UnixNano(), inode(fi)
	if old := fc.get([]byte(key)); old != nil && old.size == fi.Size() && old.mtime == mtime && old.ino == ino {
		old.checked.Store(now)
		return old, nil
	}
	if fi.Size() > fc.maxFile {
		e := &fileEntry{key: key, rel: rel, size: fi.Size(), mtime: mtime, ino: ino, stream: true, mem: fileEntryOverhead}
		e.checked.Store(now)
		e.used.Store(now)
		fc.put(e)
		return e, nil
	}
	data := make([]byte, fi.Size()+1)
	n, err := io.ReadFull(f, data)
	if (err != io.ErrUnexpectedEOF && err != io.EOF) || int64(n) != fi.Size() {
		// The file grew or shrank while being read.
		return nil, errNotCacheable
	}
	if fi2, err := f.Stat(); err != nil || fi2.Size() != fi.Size() || fi2.ModTime().UnixNano() != mtime {
		return nil, errNotCacheable // written to while being read
	}
	e := buildFileEntry(key, rel, fi.Size(), mtime, ino, data[:n:n])
	e.checked.Store(now)
	e.used.Store(now)
	fc.put(e)
	return e, nil
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// buildFileEntry prepares the responses for a file's content.
func buildFileEntry(key, rel string, size, mtime int64, ino uint64, data []byte) *fileEntry {
	mod := time.Unix(0, mtime)
	e := &fileEntry{
		key: key, rel: rel, size: size, mtime: mtime, ino: ino,
		modTime: mod.Truncate(time.Second),
		etag:    `W/"` + strconv.FormatInt(size, 16) + "-" + strconv.FormatInt(mtime, 16) + `"`,
		lastMod: fasthttp.AppendHTTPDate(nil, mod),
	}
	// The content type as fasthttp's FS finds it: by extension, else by
	// sniffing the first 512 bytes.
	ctype := mime.TypeByExtension(path.Ext(rel))
	if ctype == "" {
		ctype = http.DetectContentType(data[:min(len(data), 512)])
	}
	e.v[encIdentity] = e.variant(ctype, encIdentity, data)
	if compressible(data) {
		e.compressed = true
		e.v[encGzip] = e.variant(ctype, encGzip, fasthttp.AppendGzipBytesLevel(nil, data, compressLevel))
		e.v[encBrotli] = e.variant(ctype, encBrotli, fasthttp.AppendBrotliBytesLevel(nil, data, compressLevel))
	}
	e.mem = fileEntryOverhead + int64(len(key)+len(rel)+len(e.etag)+len(e.lastMod))
	for i := range e.v {
		v := &e.v[i]
		e.mem += int64(len(v.head) + len(v.notModified) + len(v.body))
	}
	return e
}

// variant builds the header lines of one encoding, in the order fasthttp
// writes them.
func (e *fileEntry) variant(ctype string, enc fileEncoding, body []byte) fileVariant {
	var h []byte
	h = append(h, "Content-Type: "...)
	h = append(h, ctype...)
	h = append(h, "\r\nX-Content-Type-Options: nosniff\r\n"...)
	if enc != encIdentity {
		h = append(h, "Content-Encoding: "...)
		h = append(h, encodingNames[enc]...)
		h = append(h, "\r\n"...)
	}
	h = append(h, "Content-Length: "...)
	h = strconv.AppendInt(h, int64(len(body)), 10)
	h = append(h, "\r\n"...)
	var nm []byte
	if enc != encIdentity {
		h = append(h, "Vary: Accept-Encoding\r\n"...)
		nm = append(nm, "Vary: Accept-Encoding\r\n"...)
	}
	h = append(h, "Accept-Ranges: bytes\r\nLast-Modified: "...)
	h = append(h, e.lastMod...)
	h = append(h, "\r\nETag: "...)
	h = append(h, e.etag...)
	h = append(h, "\r\n"...)
	nm = append(nm, "ETag: "...)
	nm = append(nm, e.etag...)
	nm = append(nm, "\r\n"...)
	return fileVariant{head: h, notModified: nm, body: body}
}

// compressible applies fasthttp's FS rule: gzip shrinks the first 4 KiB
// below 80 %.
func compressible(data []byte) bool {
	n := min(len(data), compressSample)
	if n == 0 {
		return false
	}
	z := fasthttp.AppendGzipBytesLevel(nil, data[:n], compressLevel)
	return float64(len(z)) < float64(n)*compressMinRatio
}

// put inserts e, replacing the entry for its key, and evicts the entries
// used longest ago while the cache is over its budget.
func (fc *fileCache) put(e *fileEntry) {
	if e.mem > fc.budget {
		fc.remove(e.key)
		return
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if old := fc.m[e.key]; old != nil {
		fc.mem -= old.mem
	}
	fc.m[e.key] = e
	fc.mem += e.mem
	if fc.mem > fc.budget {
		fc.evictLocked(e)
	}
}

// evictLocked drops the entries used longest ago, keep excepted, until the
// cache holds at most 7/8 of its budget (so that a full cache does not sort
// its entries on every insert).
func (fc *fileCache) evictLocked(keep *fileEntry) {
	all := make([]*fileEntry, 0, len(fc.m))
	for _, e := range fc.m {
		if e != keep {
			all = append(all, e)
		}
	}
	slices.SortFunc(all, func(a, b *fileEntry) int {
		ua, ub := a.used.Load(), b.used.Load()
		switch {
		case ua < ub:
			return -1
		case ua > ub:
			return 1
		}
		return 0
	})
	for _, e := range all {
		if fc.mem <= fc.budget/8*7 {
			break
		}
		delete(fc.m, e.key)
		fc.mem -= e.mem
	}
}

// remove drops the entry for key, if any.
func (fc *fileCache) remove(key string) {
	fc.mu.Lock()
	if old := fc.m[key]; old != nil {
		delete(fc.m, key)
		fc.mem -= old.mem
	}
	fc.mu.Unlock()
}

// fresh reports whether e may be served without checking its file. When
// the last check is older than fileRevalidate, the first caller claims
// the check (and gets false: its request goes to a file worker, which
// checks); callers after it get true until the check is due again.
func (e *fileEntry) fresh(now int64) bool {
	last := e.checked.Load()
	if d := now - last; d >= 0 && d < fileRevalidate {
		return true
	}
	return !e.checked.CompareAndSwap(last, now)
}

// touch records a use for eviction (a store only when the coarse clock
// moved, so loops sharing an entry rarely write its cache line).
func (e *fileEntry) touch(now int64) {
	if e.used.Load() != now {
		e.used.Store(now)
	}
}

// pick returns the variant for a request's Accept-Encoding, preferring br
// to gzip as fasthttp's FS does.
func (e *fileEntry) pick(h *fasthttp.RequestHeader) *fileVariant {
	if e.compressed {
		if h.HasAcceptEncoding("br") {
			return &e.v[encBrotli]
		}
		if h.HasAcceptEncoding("gzip") {
			return &e.v[encGzip]
		}
	}
	return &e.v[encIdentity]
}

// notModified evaluates If-None-Match, or when it is absent
// If-Modified-Since (RFC 9110 section 13.2.2).
func (e *fileEntry) notModified(h *fasthttp.RequestHeader) bool {
	if inm := h.Peek(fasthttp.HeaderIfNoneMatch); len(inm) > 0 {
		return etagMatch(inm, e.etag)
	}
	ims := h.Peek(fasthttp.HeaderIfModifiedSince)
	if len(ims) == 0 {
		return false
	}
	if bytes.Equal(ims, e.lastMod) {
		return true
	}
	t, err := fasthttp.ParseHTTPDate(ims)
	return err == nil && !t.Before(e.modTime)
}

// appendFileResponse appends the response to a request for e: 200 with v
// (head only for HEAD) or 304. It returns the body bytes included.
func appendFileResponse(b []byte, v *fileVariant, notModified bool, date []byte, head, keepAlive bool, hsts string) ([]byte, int) {
	if notModified {
		b = append(b, "HTTP/1.1 304 Not Modified\r\nServer: zenconn\r\nDate: "...)
	} else {
		b = append(b, "HTTP/1.1 200 OK\r\nServer: zenconn\r\nDate: "...)
	}
	b = append(b, date...)
	b = append(b, "\r\n"...)
	if hsts != "" {
		b = append(b, "Strict-Transport-Security: "...)
		b = append(b, hsts...)
		b = append(b, "\r\n"...)
	}
	if notModified {
		b = append(b, v.notModified...)
	} else {
		b = append(b, v.head...)
	}
	if !keepAlive {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	if notModified || head {
		return b, 0
	}
	return append(b, v.body...), len(v.body)
}

// Date is a Date header value, formatted again when the second changes.
// Each event loop keeps one; it is not safe for concurrent use.
type Date struct {
	sec int64
	n   int
	b   [32]byte
}

// Get returns the date for now (ns); the bytes are valid until the next
// call.
func (d *Date) Get(now int64) []byte {
	if sec := now / int64(time.Second); sec != d.sec || d.n == 0 {
		d.sec = sec
		d.n = len(fasthttp.AppendHTTPDate(d.b[:0], time.Unix(sec, 0)))
	}
	return d.b[:d.n]
}
