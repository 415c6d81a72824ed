"""Self cost per function from callgrind dumps, per request, and where one binary spends more
than another. Used by bench/instructions:
    callgrind.py REQUESTS TOP  TITLE SIDECAR_DUMP FLOOR_DUMP  [TITLE SIDECAR_DUMP FLOOR_DUMP ...]
"""
import collections
import re
import sys

NAME = re.compile(r"\((\d+)\)(?:\s+(.*))?$")


def self_costs(path):
    """Instructions spent in each function itself (inlined code included), by name."""
    names, costs = {}, collections.Counter()
    fn, call_line_next = None, False

    def name(value):
        m = NAME.match(value)
        if not m:
            return value
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "?")

    with open(path) as f:
        for line in f:
            if line.startswith("fn="):
                fn = name(line[3:].rstrip("\n"))
            elif line.startswith("cfn="):
                name(line[4:].rstrip("\n"))  # defines a compressed name used later
            elif line.startswith("calls="):
                call_line_next = True  # the next cost line is the call's inclusive cost
            elif line[:1] in "0123456789+-*":
                parts = line.split()
                if len(parts) >= 2 and not call_line_next:
                    costs[fn] += int(parts[1])
                call_line_next = False
    return costs


def main():
    n, top = int(sys.argv[1]), int(sys.argv[2])
    args = sys.argv[3:]
    for title, sidecar_path, floor_path in zip(args[0::3], args[1::3], args[2::3]):
        a, b = self_costs(sidecar_path), self_costs(floor_path)
        ta, tb = sum(a.values()) / n, sum(b.values()) / n
        print(f"== {title}: sidecar {ta:,.0f}, floor {tb:,.0f} instructions per request: "
              f"{ta / tb:.2f}x (+{ta - tb:,.0f})")
        print(f"{'sidecar':>9} {'floor':>9} {'extra':>9}  function (self cost per request)")
        for k in sorted(set(a) | set(b), key=lambda k: b[k] - a[k])[:top]:
            print(f"{a[k] / n:9,.0f} {b[k] / n:9,.0f} {(a[k] - b[k]) / n:+9,.0f}  {k[:140]}")
        print()


if __name__ == "__main__":
    main()
