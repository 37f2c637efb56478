"""A complete relay ingester in Python (grpcio).

usage: ingester.py ADDR STORE_DIR [COLLECTION_PREFIX]...

    RELAY_TOKEN=shr_... INGESTER_GROUP=ingesters \\
        python3 pkg/relay/examples/ingester.py 127.0.0.1:50051 store-b app.bsky.feed.

Streams operations, stores each one (a JSON line in STORE_DIR/operations.jsonl,
flushed and synced), then acknowledges: in a consumer group with Ack, as a
broadcast client by saving its cursor (STORE_DIR/cursor). Reconnects when the
stream ends, resuming where it stopped; a refused token or request ends it with
the relay's message (exit status 1).

RELAY_TOKEN: a token with the subscribe scope (unset: none, for a relay run
with --insecure-no-auth). INGESTER_GROUP: join this consumer group (unset: a
broadcast stream). The stubs are generated from proto/ with grpcio-tools
(pip install grpcio-tools) into STORE_DIR/stubs. The tests run it
(cmd/skyhouse/tests/relay/examples.rs) in a group with the Rust one.
"""

import json
import os
import sys
import time

from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "..", "proto"))


def stubs(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(PROTO_ROOT, "skyhouse/relay/v1/relay.proto"),
    ])
    if code != 0:
        sys.exit(f"ingester: protoc failed: {code}")
    sys.path.insert(0, out_dir)


def store(out, ops, relay_pb2):
    for op in ops:
        out.write(json.dumps({
            "cursor": op.cursor,
            "did": op.did,
            "collection": op.collection,
            "rkey": op.rkey,
            "action": relay_pb2.Action.Name(op.action),
            "cid": op.cid,
            "rev": op.rev,
        }) + "\n")
    out.flush()
    os.fsync(out.fileno())


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    addr, store_dir = sys.argv[1:3]
    collections = sys.argv[3:]
    token = os.environ.get("RELAY_TOKEN") or None
    group = os.environ.get("INGESTER_GROUP", "")
    os.makedirs(store_dir, exist_ok=True)
    stubs(os.path.join(store_dir, "stubs"))
    import grpc
    from skyhouse.relay.v1 import relay_pb2, relay_pb2_grpc

    metadata = [("authorization", f"Bearer {token}")] if token else []
    cursor_path = os.path.join(store_dir, "cursor")
    fatal = {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
    with grpc.insecure_channel(addr) as channel, \
            open(os.path.join(store_dir, "operations.jsonl"), "a") as out:
        stub = relay_pb2_grpc.RelayStub(channel)
        while True:
            request = relay_pb2.StreamRequest(
                collections=collections, client_name="python-ingester", group=group)
            # A group resumes from its own positions; a broadcast client from its file.
            if not group and os.path.exists(cursor_path):
                with open(cursor_path) as f:
                    request.cursor = int(f.read())
            try:
                for batch in stub.StreamOperations(request, metadata=metadata):
                    store(out, batch.operations, relay_pb2)
                    if batch.session:
                        stub.Ack(relay_pb2.AckRequest(session=batch.session, ack_id=batch.ack_id),
                                 metadata=metadata)
                    elif batch.operations:
                        tmp = cursor_path + ".tmp"
                        with open(tmp, "w") as f:
                            f.write(f"{batch.operations[-1].cursor}\n")
                        os.replace(tmp, cursor_path)
                print("ingester: the relay closed the stream; resuming", file=sys.stderr)
            except grpc.RpcError as e:
                if e.code() in fatal:
                    sys.exit(f"ingester: {e.code().name}: {e.details()}")
                # Too slow (RESOURCE_EXHAUSTED), the relay restarted, or an Ack
                # failed (the group delivers those operations again): resume.
                print(f"ingester: stream ended: {e.details()}; resuming", file=sys.stderr)
            time.sleep(0.2)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
