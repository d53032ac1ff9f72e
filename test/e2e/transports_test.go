package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/test/freeport"
	"github.com/lineamica/centralino/test/sipua"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns their paths.
func selfSigned(t *testing.T) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "centralino test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return cert, keyFile
}

func TestTLSPhoneCallsWebSocketPhone(t *testing.T) {
	cert, key := selfSigned(t)
	tlsPort := freeport.Port(t)
	n := startNode(t, nodeOptions{edit: func(c *configs.Config) {
		c.Listen = append(c.Listen, configs.Listener{Transport: "tls", Addr: fmt.Sprintf("127.0.0.1:%d", tlsPort), CertFile: cert, KeyFile: key})
	}})
	wsPhone := sipua.New(t, fmt.Sprintf("127.0.0.1:%d", n.WSPort), realm, "age.greco", "demo-age.greco", "ws")
	mustRegister(t, wsPhone)
	tlsPhone := sipua.New(t, fmt.Sprintf("127.0.0.1:%d", tlsPort), realm, "age.marino", "demo-age.marino", "tls")
	mustRegister(t, tlsPhone)
	if v := n.metric(t, `centralino_registrar_bindings{transport="ws"}`); v != 1 {
		t.Errorf("ws bindings = %v, want 1", v)
	}
	if v := n.metric(t, `centralino_registrar_bindings{transport="tls"}`); v != 1 {
		t.Errorf("tls bindings = %v, want 1", v)
	}
	res, inv := tlsPhone.Invite("201")
	if res.StatusCode != 200 {
		t.Fatalf("TLS phone calling WebSocket phone: %d %s", res.StatusCode, res.Reason)
	}
	select {
	case got := <-wsPhone.Invites:
		if got.Transport() != "WS" {
			t.Errorf("callee got the INVITE over %s, want WS", got.Transport())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("WebSocket phone saw no INVITE")
	}
	tlsPhone.Ack(inv, res)
	if bye := tlsPhone.Bye(inv, res); bye.StatusCode != 200 {
		t.Errorf("BYE: %d", bye.StatusCode)
	}
	// A query (REGISTER without Contact) lists the binding and changes nothing.
	q := wsPhone.Request(sip.REGISTER, "age.greco")
	q.Recipient.User = ""
	q.RemoveHeader("Contact")
	if res := wsPhone.DoAuth(q); res.StatusCode != 200 || res.Contact() == nil {
		t.Errorf("registration query: %d %v", res.StatusCode, res.Contact())
	}
}
