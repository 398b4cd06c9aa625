// A throw-away API server for `kubectl apply --dry-run=server`: an embedded etcd and
// kube-apiserver in one process, both on 127.0.0.1 (k8s/tools/kube.py starts it). The etcd
// flags come first; everything after `--` goes to kube-apiserver unchanged:
//
//	shop-apiserver --etcd-data-dir=DIR [--etcd-client-url=U --etcd-peer-url=U] -- KUBE-APISERVER-FLAGS
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	fs := flag.NewFlagSet("shop-apiserver", flag.ExitOnError)
	dataDir := fs.String("etcd-data-dir", "", "etcd data directory (required)")
	clientURL := fs.String("etcd-client-url", "http://127.0.0.1:2379", "etcd client URL")
	peerURL := fs.String("etcd-peer-url", "http://127.0.0.1:2380", "etcd peer URL")
	_ = fs.Parse(os.Args[1:])
	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "--etcd-data-dir is required")
		os.Exit(2)
	}

	cfg := embed.NewConfig()
	cfg.Dir = *dataDir
	cfg.LogLevel = "error"
	client, _ := url.Parse(*clientURL)
	peer, _ := url.Parse(*peerURL)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		os.Exit(1)
	}
	select {
	case <-etcd.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd did not start")
		os.Exit(1)
	}

	// A fresh key for service-account tokens, which kube-apiserver insists on.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		fmt.Fprintln(os.Stderr, "key:", err)
		os.Exit(1)
	}
	keyFile := filepath.Join(*dataDir, "service-account.key")
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "key:", err)
		os.Exit(1)
	}

	command := app.NewAPIServerCommand()
	command.SetArgs(append(fs.Args(),
		"--etcd-servers="+*clientURL,
		"--service-account-key-file="+keyFile,
		"--service-account-signing-key-file="+keyFile,
	))
	os.Exit(cli.Run(command))
}
