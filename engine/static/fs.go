package static

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// newFS returns fasthttp's file server over root, as the file workers use
// it: index.html for folders, no listings, gzip and brotli copies kept in
// compressDir, ranges, and one second of caching of open files (cleaned
// until stop is closed).
func newFS(root, compressDir string, stop chan struct{}) fasthttp.RequestHandler {
	fs := &fasthttp.FS{
		CleanStop:          stop,
		Root:               root,
		AllowEmptyRoot:     true,
		IndexNames:         []string{"index.html"},
		GenerateIndexPages: false,
		Compress:           true,
		CompressBrotli:     true,
		CompressRoot:       compressDir,
		AcceptByteRange:    true,
		CacheDuration:      time.Second,
		PathNotFound: func(ctx *fasthttp.RequestCtx) {
			ctx.Error("not found\n", fasthttp.StatusNotFound)
		},
	}
	return fs.NewRequestHandler()
}

// serveFS answers from the public folder through fasthttp's FS, with
// dotfiles refused and a weak ETag added.
func (s *Server) serveFS(ctx *fasthttp.RequestCtx) {
	p := string(ctx.Path()) // normalized and percent-decoded by fasthttp
	for _, seg := range strings.Split(p, "/") {
		if strings.HasPrefix(seg, ".") || strings.ContainsRune(seg, 0) || strings.ContainsRune(seg, '\\') {
			ctx.Error("not found\n", fasthttp.StatusNotFound)
			return
		}
	}
	etag := s.etagFor(p)
	if inm := ctx.Request.Header.Peek(fasthttp.HeaderIfNoneMatch); len(inm) > 0 {
		if etag != "" && etagMatch(inm, etag) {
			ctx.Response.Header.Set("ETag", etag)
			ctx.SetStatusCode(fasthttp.StatusNotModified)
			ctx.Response.SkipBody = true
			return
		}
		// If-Modified-Since is ignored when If-None-Match is present
		// (RFC 9110 section 13.1.3); fasthttp's FS, which has no ETag of
		// its own here, would evaluate it.
		ctx.Request.Header.Del(fasthttp.HeaderIfModifiedSince)
	}
	clampRange(&ctx.Request.Header)
	s.fs(ctx)
	if st := ctx.Response.StatusCode(); etag != "" && (st == 200 || st == 206 || st == 304) {
		ctx.Response.Header.Set("ETag", etag)
	}
}

// etagFor returns a weak validator for the file behind URL path p, or ""
// when there is none: W/"<size>-<mtime>" in hex.
func (s *Server) etagFor(p string) string {
	name := filepath.Join(s.root, filepath.FromSlash(p))
	fi, err := os.Stat(name)
	if err == nil && fi.IsDir() {
		fi, err = os.Stat(filepath.Join(name, "index.html"))
	}
	if err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	return `W/"` + strconv.FormatInt(fi.Size(), 16) + "-" + strconv.FormatInt(fi.ModTime().UnixNano(), 16) + `"`
}

// etagMatch implements the weak comparison of If-None-Match (RFC 9110
// section 13.1.2).
func etagMatch(header []byte, etag string) bool {
	weak := strings.TrimPrefix(etag, "W/")
	for len(header) > 0 {
		f := header
		if i := bytes.IndexByte(header, ','); i >= 0 {
			f, header = header[:i], header[i+1:]
		} else {
			header = nil
		}
		f = bytes.TrimSpace(f)
		if len(f) >= 2 && f[0] == 'W' && f[1] == '/' {
			f = f[2:]
		}
		if string(f) == "*" || string(f) == weak {
			return true
		}
	}
	return false
}

// fasthttpLogger routes fasthttp's messages to the application log.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp", "msg", strings.TrimSpace(fmt.Sprintf(format, args...)))
}
