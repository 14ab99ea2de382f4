// Package depcheck holds no code, only tests that keep the project's layers
// honest: an import pointing the wrong way between packages (the rules are
// in deps_test.go), or a tested package without a goroutine-leak check in
// its TestMain, fails the build.
package depcheck
