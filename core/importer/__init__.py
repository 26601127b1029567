"""The import pipeline: sources (file, HTTP, HTTPS, FTP) behind a network policy, format inspection,
conversion with qemu-img, and the `import` job that ties them together (see core.importer.job).

Modules: `netpolicy` (SSRF guard), `sources` (streaming fetch with resume), `inspect` (format
detection and safety checks from the bytes), `convert` (qemu-img convert, resize, publish),
`submit` (validate and queue an import), `job` (the worker's handler), `secrets` (credentials).
"""
