// pause is the pod sandbox's first process: it holds the pod's namespaces open and does nothing
// else. Our machines cannot pull registry.k8s.io/pause, so the harness builds this one.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		// As PID 1 in the pod, reap orphaned children so they never linger as zombies.
		child := make(chan os.Signal, 1)
		signal.Notify(child, syscall.SIGCHLD)
		for range child {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}()
	<-sigs
}
