// Two functions Traefik's auth middlewares call that github.com/abbot/go-http-auth v0.4.0 lacks
// (Traefik pins a fork the Go module proxy does not serve). e2e/build-binaries.sh adds this file
// to a copy of v0.4.0 when it builds Traefik for the local cluster; it is Rollwise's own code.

package auth

import (
	"net/http"
	"strings"
)

// CheckSecret reports whether password matches an htpasswd secret, by the same comparisons
// (SHA1, MD5 crypt, bcrypt) BasicAuth.CheckAuth applies.
func CheckSecret(password, secret string) bool {
	compare := compareFuncs[0].compare
	for _, cmp := range compareFuncs[1:] {
		if strings.HasPrefix(secret, cmp.prefix) {
			compare = cmp.compare
			break
		}
	}
	return compare([]byte(secret), []byte(password)) == nil
}

// staleWriter marks the digest challenge it passes on as stale (RFC 7616 §3.3): the client
// retries with the new nonce without asking its user again.
type staleWriter struct {
	http.ResponseWriter
	header string
}

func (s staleWriter) WriteHeader(code int) {
	h := s.ResponseWriter.Header()
	if v := h.Get(s.header); v != "" {
		h.Set(s.header, v+`, stale="true"`)
	}
	s.ResponseWriter.WriteHeader(code)
}

// RequireAuthStale is RequireAuth with the challenge marked stale.
func (a *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) {
	a.RequireAuth(staleWriter{w, a.Headers.V().Authenticate}, r)
}
