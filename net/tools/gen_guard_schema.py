#!/usr/bin/env python3
"""Generates net/src/codec/schema.rs: the wire layout (field kinds and version ranges) of every
Kafka request that kafka-protocol 0.18 models, extracted from the crate's generated decoders.

Only layout facts are extracted (which field kind is read at which version, which tags are known);
no code is copied. `codec::guard` walks request bodies with these tables before the crate decodes
them. Usage: python3 net/tools/gen_guard_schema.py ~/.cargo/registry/src/*/kafka-protocol-0.18.0
"""
import os
import re
import sys

SRC = os.path.join(sys.argv[1], "src", "messages")
OUT = os.path.join(os.path.dirname(__file__), "..", "src", "codec", "schema.rs")

PRIM = {
    "Int8": "I8", "Int16": "I16", "Int32": "I32", "Int64": "I64", "UInt16": "U16",
    "UInt32": "U32", "Float64": "F64", "Uuid": "Uuid", "Boolean": "Bool",
    "String": "Str", "CompactString": "Str", "Bytes": "Bytes", "CompactBytes": "Bytes",
    "UnsignedVarInt": "UVarInt", "VarInt": "VarInt", "VarLong": "VarLong",
}
COMPACT = {"CompactString", "CompactBytes", "CompactArray"}


def find_block(text, start):
    """Index just past the brace block opening at or after `start`."""
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return i, j + 1
    raise ValueError("unbalanced")


def struct_fields(text):
    out = {}
    for m in re.finditer(r"pub struct (\w+) \{", text):
        a, b = find_block(text, m.start())
        fields = {}
        for fm in re.finditer(r"pub (\w+): ([^;\n]+),\n", text[a:b]):
            fields[fm.group(1)] = fm.group(2)
        out[m.group(1)] = fields
    return out


def elem_struct(rust_ty):
    m = re.search(r"Vec<(?:super::)?(\w+)>", rust_ty)
    if m:
        return m.group(1)
    m = re.match(r"(?:Option<)?(?:super::)?(\w+)", rust_ty)
    return m.group(1)


def parse_expr(e):
    """Tree: ('if', cond, then, else) | ('decode', typeexpr) | ('default',)."""
    e = e.strip()
    if e.startswith("if "):
        a, b = find_block(e, 0)
        cond = e[3:a].strip()
        then = e[a + 1:b - 1]
        rest = e[b:].strip()
        if rest.startswith("else"):
            rest = rest[4:].strip()
            if rest.startswith("if "):
                other = parse_expr(rest)
            else:
                a2, b2 = find_block(rest, 0)
                other = parse_expr(rest[a2 + 1:b2 - 1])
        else:
            other = ("default",)
        return ("if", cond, parse_expr(then), other)
    m = re.search(r"types::(.+?)\.decode\(buf\)\?", e)
    if m:
        return ("decode", m.group(1))
    if "bail!" in e:
        return ("bail",)
    return ("default",)


def eval_expr(t, v):
    if t[0] == "if":
        cond = t[1].replace("&&", " and ").replace("||", " or ")
        return eval_expr(t[2] if eval(cond, {"version": v}) else t[3], v)
    return t


PREFIX = [""]


def qualified(struct):
    """Static name: nested structs get their file's stem, since names repeat across files."""
    own = const_name(struct)
    return own if own.startswith(PREFIX[0]) else PREFIX[0] + "_" + own


def kind_of(typeexpr, field, fields, v, flex):
    """Rust table expression for one decode type expression."""
    typeexpr = typeexpr.replace("types::", "")
    m = re.match(r"(Compact)?Array\((.*)\)$", typeexpr)
    if m:
        assert bool(m.group(1)) == (v >= flex), (typeexpr, v, flex, field)
        inner = m.group(2)
        return "Ty::Array(&" + kind_of(inner, field, fields, v, flex) + ")"
    if typeexpr.startswith("OptionStruct"):
        return "Ty::OptStruct(&%s)" % qualified(elem_struct(fields[field]))
    if typeexpr.startswith("Struct"):
        return "Ty::Struct(&%s)" % qualified(elem_struct(fields[field]))
    base = typeexpr.split("(")[0]
    if base in COMPACT or base in ("String", "Bytes"):
        assert (base in COMPACT) == (v >= flex), (typeexpr, v, flex, field)
    return "Ty::" + PRIM[base]


def const_name(struct):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", struct).upper()


def ranges(per_version):
    """[(v, kind or None)] -> [(min, max, kind)] merging consecutive equal kinds."""
    out = []
    for v, k in per_version:
        if k is None:
            continue
        if out and out[-1][2] == k and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v, k)
        else:
            out.append((v, v, k))
    return out


def main():
    schemas = {}
    order = []
    requests = []
    keys = open(os.path.join(SRC, "..", "messages.rs")).read()
    for fname in sorted(os.listdir(SRC)):
        if not fname.endswith("_request.rs"):
            continue
        text = open(os.path.join(SRC, fname)).read()
        fields_of = struct_fields(text)
        PREFIX[0] = fname[:-3].upper()
        for m in re.finditer(r"^impl Decodable for (\w+) \{", text, re.M):
            name = m.group(1)
            a, b = find_block(text, m.start())
            body = text[a:b]
            vm = re.search(r"if version < (-?\d+) \|\| version > (\d+)", body)
            if vm:
                lo, hi = int(vm.group(1)), int(vm.group(2))
            else:
                one = re.search(r"if version != (-?\d+)", body)
                lo = hi = int(one.group(1))
            fm = re.search(r"if version >= (\d+) \{\s*let num_tagged_fields", body)
            flex = int(fm.group(1)) if fm else 10_000
            if not fm and re.search(r"\n        let num_tagged_fields", body):
                flex = lo  # flexible at every version
            fields = []
            for lm in re.finditer(r"\n        let (\w+) = ", body):
                if lm.group(1) in ("num_tagged_fields", "tag", "size", "unknown_value"):
                    continue  # the tagged-field section, walked generically
                start = lm.end()
                # The statement ends at the first ';' at brace depth 0.
                depth = 0
                for j in range(start, len(body)):
                    c = body[j]
                    if c == "{":
                        depth += 1
                    elif c == "}":
                        depth -= 1
                    elif c == ";" and depth == 0:
                        break
                tree = parse_expr(body[start:j])
                per = []
                for v in range(lo, hi + 1):
                    t = eval_expr(tree, v)
                    k = kind_of(t[1], lm.group(1), fields_of[name], v, flex) if t[0] == "decode" else None
                    per.append((v, k))
                fields += ranges(per)
            tagged = []
            mm = re.search(r"match tag \{", body)
            if mm:
                ta, tb = find_block(body, mm.start())
                arms = body[ta + 1:tb - 1]
                for am in re.finditer(r"(\d+) => \{", arms):
                    aa, ab = find_block(arms, am.start())
                    arm = arms[aa + 1:ab - 1]
                    sm = re.search(r"(\w+) = ", arm)
                    tree = parse_expr(arm.strip() if arm.strip().startswith("if ") else arm)
                    per = []
                    for v in range(max(lo, flex), hi + 1):
                        t = eval_expr(tree, v)
                        k = kind_of(t[1], sm.group(1), fields_of[name], v, flex) if t[0] == "decode" else None
                        per.append((v, k))
                    for (x, y, k) in ranges(per):
                        tagged.append((int(am.group(1)), x, y, k))
            schemas[qualified(name)] = (name, lo, hi, flex, fields, tagged)
            order.append(qualified(name))
            km = re.search(r"impl Request for %s \{\s*const KEY: i16 = (\d+);" % name, keys)
            if km:
                requests.append((int(km.group(1)), qualified(name)))
    lines = [
        "//! Generated by `net/tools/gen_guard_schema.py` from kafka-protocol 0.18's message",
        "//! definitions: the wire layout (field kinds per version) of every request, for",
        "//! `codec::guard`. Data only; never edit by hand, regenerate instead.",
        "",
        "use super::guard::{Field, Schema, Tagged, Ty};",
        "",
    ]
    for name in order:
        rust_name, lo, hi, flex, fields, tagged = schemas[name]
        lines.append("pub(crate) static %s: Schema = Schema {" % name)
        lines.append('    name: "%s",' % rust_name)
        lines.append("    min: %d," % lo)
        lines.append("    max: %d," % hi)
        lines.append("    flexible_min: %d," % min(flex, 32767))
        lines.append("    fields: &[")
        for (x, y, k) in fields:
            lines.append("        Field { min: %d, max: %d, ty: %s }," % (x, y, k))
        lines.append("    ],")
        lines.append("    tagged: &[")
        for (tag, x, y, k) in tagged:
            lines.append("        Tagged { tag: %d, min: %d, max: %d, ty: %s }," % (tag, x, y, k))
        lines.append("    ],")
        lines.append("};")
    lines.append("")
    lines.append("/// `(api key, request schema)` for every request the crate models.")
    lines.append("pub(crate) static REQUESTS: &[(i16, &Schema)] = &[")
    for key, name in sorted(requests):
        lines.append("    (%d, &%s)," % (key, name))
    lines.append("];")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")


main()
