// Command minio is upstream MinIO's own main, built through this wrapper module so the
// pinned pseudo-version and its go.sum live in the repository.
package main

import (
	"os"

	minio "github.com/minio/minio/cmd"
)

func main() {
	minio.Main(os.Args)
}
