"""``python -m support.grpc_server ROOT [--max-message-bytes N] [--token T] [--tls-dir D]``:
the repository at ROOT served over gRPC on a free loopback port, in its own process.

Prints ``PORT <n>`` once serving, and serves until SIGTERM or until standard input closes
(so a test that dies takes its server with it)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from keepwarm.control import ControlledSource
from keepwarm.grpc.server import GrpcServer, Tls
from keepwarm.repository import Repository
from keepwarm.service import InferenceService
from keepwarm.sources.filesystem import FilesystemSource


async def main(args: argparse.Namespace) -> None:
    control = ControlledSource(FilesystemSource(Path(args.root)), "poll")
    repository = Repository(args.root, source=control, poll_seconds=0.2, allow_unsafe=True)
    repository.start()
    service = InferenceService(repository, control=control, management_token=args.token)
    tls = None if args.tls_dir is None else Tls(args.tls_dir / "cert.pem", args.tls_dir / "key.pem")
    server = GrpcServer(service, port=0, max_message_bytes=args.max_message_bytes, tls=tls)
    await server.start()
    await server.follow_readiness()
    print(f"PORT {server.port}", flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.read(1) or done.set())
    await done.wait()
    service.begin_shutdown()
    await server.stop(grace=5)
    service.close()
    repository.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--max-message-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--token")
    parser.add_argument("--tls-dir", type=Path)
    asyncio.run(main(parser.parse_args()))
