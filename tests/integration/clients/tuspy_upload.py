"""Uploads a file to vidmill with tuspy, the stock Python tus client.

Prints one JSON line: {"url": ..., "offset": ..., "done": true|false}.

    python tuspy_upload.py ENDPOINT TOKEN FILE [--chunk BYTES]
        [--stop-after BYTES] [--resume UPLOAD_URL] [--meta KEY=VALUE ...]
"""

import json
import os
import sys

from tusclient import client


def main(argv):
    endpoint, token, path, *rest = argv
    chunk, stop_after, resume, meta = 64 * 1024, None, None, {}
    for flag, value in zip(rest[::2], rest[1::2]):
        if flag == "--chunk":
            chunk = int(value)
        elif flag == "--stop-after":
            stop_after = int(value)
        elif flag == "--resume":
            resume = value
        elif flag == "--meta":
            key, _, val = value.partition("=")
            meta[key] = val
        else:
            raise SystemExit(f"unknown flag {flag}")
    tus = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
    metadata = {"filename": os.path.basename(path), **meta}
    uploader = tus.uploader(path, chunk_size=chunk, metadata=metadata, url=resume)
    size = os.path.getsize(path)
    if stop_after is None:
        uploader.upload()
    else:
        # Stops at the first chunk boundary at or past the mark.
        uploader.upload(stop_at=min(size, -(-stop_after // chunk) * chunk))
    print(json.dumps({"url": uploader.url, "offset": uploader.offset, "done": uploader.offset == size}))


if __name__ == "__main__":
    main(sys.argv[1:])
