"""Reading an offline W&B run back: the records of its `run-*.wandb` file (a LevelDB-style log of
protobufs, what `wandb sync` uploads) and a summary of what they hold."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

WANDB_BLOCK = 32768
WANDB_HEADER = 7  # ":W&B", magic 0xBEE1 (2 bytes), version 0 (1 byte)


def read_wandb(path: str | Path) -> list[Any]:
    """The protobuf `Record`s of an offline `run-*.wandb` file (what `wandb sync` uploads)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    records, pos, parts = [], WANDB_HEADER, b""
    while pos + 7 <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        if left < 7:  # a block's tail too short for a header is zero padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 0 and length == 0:
            continue
        parts += chunk
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def wandb_summary(records: list[Any]) -> dict[str, Any]:
    """History keys, config values (JSON), file names, record kinds, the run's id, the
    `trainer/global_step` values of its history and its custom charts of an offline run.

    Media (tables, images) are logged as nested items; their key is the first part. A custom
    chart (wandb.plot) is a table `<key>_table` in the history and a panel under the config's
    `_wandb.visualize.<key>`."""
    history, config, files, summary, steps, charts = set(), {}, set(), set(), [], set()
    run_ids = set()
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "history":
            history |= {item.key or item.nested_key[0] for item in r.history.item}
            steps += [int(float(item.value_json)) for item in r.history.item
                      if (item.key or item.nested_key[0]) == "trainer/global_step"]
        elif kind == "config":
            for item in r.config.update:
                config[item.key or item.nested_key[0]] = item.value_json
                if list(item.nested_key[:2]) == ["_wandb", "visualize"] and len(item.nested_key) > 2:
                    charts.add(item.nested_key[2])
        elif kind == "files":
            files |= {f.path for f in r.files.files}
        elif kind == "summary":
            summary |= {item.key or item.nested_key[0] for item in r.summary.update}
        elif kind == "run":
            run_ids.add(r.run.run_id)
    return {"history": history, "config": config, "files": files, "summary": summary,
            "kinds": {r.WhichOneof("record_type") for r in records}, "run_ids": run_ids,
            "steps": sorted(set(steps)), "charts": charts}
