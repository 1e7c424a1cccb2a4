// Command etcd is upstream etcd's own main (go.etcd.io/etcd/v3 is not go-installable: its
// go.mod replaces sibling folders), built through this wrapper module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
