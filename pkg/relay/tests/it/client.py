"""A Python gRPC client of the relay (grpcio), generated from the same proto.

usage: client.py OUT_DIR ADDR CURSOR UNTIL [--collection P]... [--did D]... [--action N]...

Generates the stubs into OUT_DIR with grpcio-tools, streams operations after
CURSOR until the one with cursor UNTIL, and prints each as a JSON line.
"""

import json
import os
import sys

from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "proto"))


def main():
    out_dir, addr, cursor, until = sys.argv[1:5]
    collections, dids, actions = [], [], []
    rest = sys.argv[5:]
    for flag, value in zip(rest[::2], rest[1::2]):
        {"--collection": collections, "--did": dids, "--action": actions}[flag].append(value)
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(PROTO_ROOT, "skyhouse/relay/v1/relay.proto"),
    ])
    if code != 0:
        sys.exit(f"protoc failed: {code}")
    sys.path.insert(0, out_dir)
    import grpc
    from skyhouse.relay.v1 import relay_pb2, relay_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        stub = relay_pb2_grpc.RelayStub(channel)
        request = relay_pb2.StreamRequest(
            cursor=int(cursor),
            collections=collections,
            dids=dids,
            actions=[int(a) for a in actions],
            client_name="python",
        )
        for batch in stub.StreamOperations(request):
            for op in batch.operations:
                print(json.dumps({
                    "cursor": op.cursor,
                    "source": op.source,
                    "did": op.did,
                    "collection": op.collection,
                    "rkey": op.rkey,
                    "action": op.action,
                    "cid": op.cid,
                    "rev": op.rev,
                    "record_json": op.record_json,
                    "time_us": op.time_us,
                    "indexed_at": op.indexed_at,
                }), flush=True)
                if op.cursor >= int(until):
                    return


if __name__ == "__main__":
    main()
