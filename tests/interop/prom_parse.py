"""Parses a /metrics body (stdin) with the Prometheus project's own Python parser.

Exits 1 with the reason if the text is not valid Prometheus text format, or if a histogram is
inconsistent (buckets not cumulative, no +Inf bucket, +Inf bucket != _count). Otherwise prints
one JSON object: {"samples": {"name{a=\"x\",b=\"y\"}": value, ...}, "types": {family: type},
"help": {family: text}}, labels sorted by name, so the caller can compare exact values.
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def key(name, labels):
    if not labels:
        return name
    inner = ",".join(f'{k}="{labels[k]}"' for k in sorted(labels))
    return f"{name}{{{inner}}}"


def check_histogram(family):
    """Buckets of each series must be cumulative and end in +Inf equal to _count."""
    series = {}
    for sample in family.samples:
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        ident = tuple(sorted(labels.items()))
        entry = series.setdefault(ident, {"buckets": [], "count": None, "sum": None})
        if sample.name.endswith("_bucket"):
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            entry["count"] = sample.value
        elif sample.name.endswith("_sum"):
            entry["sum"] = sample.value
    for ident, entry in series.items():
        buckets = sorted(entry["buckets"])
        if not buckets or not math.isinf(buckets[-1][0]):
            raise ValueError(f"{family.name}{dict(ident)}: no +Inf bucket")
        counts = [count for _, count in buckets]
        if counts != sorted(counts):
            raise ValueError(f"{family.name}{dict(ident)}: buckets are not cumulative")
        if entry["count"] is None or entry["sum"] is None:
            raise ValueError(f"{family.name}{dict(ident)}: no _count or _sum")
        if counts[-1] != entry["count"]:
            raise ValueError(f"{family.name}{dict(ident)}: +Inf bucket != _count")


def main():
    text = sys.stdin.read()
    samples, types, helps = {}, {}, {}
    try:
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            helps[family.name] = family.documentation
            if family.type == "histogram":
                check_histogram(family)
            for sample in family.samples:
                k = key(sample.name, sample.labels)
                if k in samples:
                    raise ValueError(f"duplicate sample {k}")
                samples[k] = sample.value
    except Exception as e:  # the parser raises ValueError and friends on bad input
        print(f"not valid Prometheus text format: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump({"samples": samples, "types": types, "help": helps}, sys.stdout)


if __name__ == "__main__":
    main()
