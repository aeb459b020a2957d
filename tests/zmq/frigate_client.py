"""A client of `glip serve --zmq` as Frigate's `zmq` detector is one: a libzmq REQ socket
with send and receive timeouts, a [header JSON, uint8 tensor] request, a [header, float32
rows] reply decoded by the header's shape and dtype. Prints {"header": …, "rows": […]} as
JSON. Usage: frigate_client.py ENDPOINT RGB_FILE HEIGHT WIDTH TIMEOUT_MS
(run by tests/serve.rs with pyzmq from scripts/install-pyzmq.sh)."""
import json
import struct
import sys

import zmq

endpoint, rgb_file, height, width, timeout_ms = sys.argv[1:6]
height, width, timeout_ms = int(height), int(width), int(timeout_ms)
with open(rgb_file, "rb") as f:
    tensor = f.read()
assert len(tensor) == height * width * 3

ctx = zmq.Context()
sock = ctx.socket(zmq.REQ)
sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(endpoint)
header = {"shape": [1, height, width, 3], "dtype": "uint8", "model_type": "ssd"}
sock.send_multipart([json.dumps(header).encode("utf-8"), tensor])
frames = sock.recv_multipart()
reply = json.loads(frames[0].decode("utf-8"))
assert reply["dtype"] == "float32", reply
rows_n, cols = reply["shape"]
values = struct.unpack("<%df" % (rows_n * cols), frames[1])
rows = [list(values[r * cols:(r + 1) * cols]) for r in range(rows_n)]
print(json.dumps({"header": reply, "rows": rows}))
sock.close(0)
ctx.term()
