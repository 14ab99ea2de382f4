module github.com/zenconn/server/bench/tlscompare

go 1.26.8

require github.com/lesismal/llib v1.2.5

require (
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
