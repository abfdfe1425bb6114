// Command vcsim serves govmomi's vCenter simulator (package simulator of
// github.com/vmware/govmomi, Debian's golang-github-vmware-govmomi-dev) on
// plain http, with the lmcaps extensions of this directory: asynchronous,
// cancellable RelocateVM_Task (relocate.go), a type-aware property-collector
// traversal (traversal.go) and a small control endpoint for tests
// (control.go).
//
// Build offline in GOPATH mode:
//
//	GOPATH=$tmp:/usr/share/gocode GO111MODULE=off GOPROXY=off go build -o vcsim .
package main

import (
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:0", "listen address (host:port, port 0 = a free one)")
	username := flag.String("username", "", "the only user name accepted (empty: any non-empty name)")
	password := flag.String("password", "", "its password")
	clusterHosts := flag.Int("host", 3, "HostSystems per cluster")
	machines := flag.Int("vm", 4, "VirtualMachines per resource pool")
	urlFile := flag.String("url-file", "", "write the SDK URL to this file once listening")
	relocateTime := flag.Duration("relocate-time", 5*time.Second,
		"time a RelocateVM_Task runs (0: it never finishes by itself)")
	cancelable := flag.Bool("cancelable", true, "whether relocate tasks report info.cancelable")
	cancelDelay := flag.Duration("cancel-delay", 0,
		"time from an accepted CancelTask to the task ending cancelled")
	flag.Parse()

	model := simulator.VPX()
	model.ClusterHost = *clusterHosts
	model.Machine = *machines
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()

	model.Service.Listen = &url.URL{Host: *listen}
	if *username != "" {
		model.Service.Listen.User = url.UserPassword(*username, *password)
	}

	ext := install(relocation{
		Duration:    *relocateTime,
		Cancelable:  *cancelable,
		CancelDelay: *cancelDelay,
	})
	server := model.Service.NewServer()
	defer server.Close()
	ext.serveControl(model.Service.ServeMux)

	u := *server.URL
	u.User = nil
	if *urlFile != "" {
		if err := os.WriteFile(*urlFile+".tmp", []byte(u.String()+"\n"), 0o600); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(*urlFile+".tmp", *urlFile); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("vcsim: listening on %s\n", u.String())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
