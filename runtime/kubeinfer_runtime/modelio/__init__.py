"""Model I/O: getting a model's files onto the node as fast as the storage allows, once per job.

`ranged` reads files in parallel parts straight into local files; `sources` says where parts come
from (object storage, another pod of the job); `cache` keeps complete models keyed by URI and
version and publishes them atomically; `peers` serves a pod's copy to the job's other pods.
`kubeinfer_runtime.modelstore` puts them together behind `fetch_model`.
"""
