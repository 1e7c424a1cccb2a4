"""Model I/O: getting a model's files onto the node as fast as the storage allows, once per job.

`ranged` reads files in parallel parts straight into local files; `sources` says where parts come
from (object storage); `peers` serves a pod's copy to the job's other pods and reads from them;
`cache` keeps complete models keyed by URI and version and publishes them atomically; `remote`
puts these together for one fetch; `prefetch` runs it in the pod's launcher; `local` reads a
mounted model ahead of the loader. `kubeinfer_runtime.modelstore.fetch_model` is the entry point.
"""
