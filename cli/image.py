"""The image verbs: images, pull, tag, rmi, save, load, import."""

import argparse
import sys

from cli.common import ago, each, filter_pairs, formatted_table, size, table
from lib import container, state
from lib.host import MinidockerError


def _image_filter(given: list[str]):
    """-f dangling=true|false, reference=PATTERN (a shell pattern on name or name:tag), as Docker's."""
    import fnmatch

    tests = []
    for key, value in filter_pairs(given):
        if key == "dangling" and value in ("true", "false"):
            tests.append(lambda i, v=value: (i["tag"] == "<none>") == (v == "true"))
        elif key == "reference":
            tests.append(lambda i, v=value: i["tag"] != "<none>" and (
                fnmatch.fnmatchcase(i["repository"], v) or fnmatch.fnmatchcase(f"{i['repository']}:{i['tag']}", v)))
        else:
            raise MinidockerError(f"invalid filter '{key}={value}'", 1)
    return lambda image: all(test(image) for test in tests)


def cmd_images(args: argparse.Namespace) -> int:
    from lib import images

    wanted = _image_filter(args.filter)
    found = [i for i in images.listing() if wanted(i)]
    if args.quiet:  # each image once, however many names it has
        for image_id in dict.fromkeys(("sha256:" + i["id"]) if args.no_trunc else i["id"][:12] for i in found):
            print(image_id)
        return 0
    rows = [[i["repository"], i["tag"], ("sha256:" + i["id"]) if args.no_trunc else i["id"][:12], ago(i["created"]),
             size(i["size"])] for i in found]
    if args.format:
        fields = [{**dict(zip(("Repository", "Tag", "ID", "CreatedSince", "Size"), row, strict=True)),
                   "CreatedAt": i["created"], "Digest": "<none>"} for row, i in zip(rows, found, strict=True)]
        formatted_table(args.format, fields, {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID",
                                              "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                                              "Digest": "DIGEST"})
        return 0
    table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)
    return 0


def record(ref: str) -> dict | None:
    """`inspect` of an image, in Docker's shape; None if there is none by that name or ID."""
    from lib import images

    image_id = images.resolve(ref)
    if image_id is None:
        return None
    conf = images.config(image_id)
    tags = [f"{i['repository']}:{i['tag']}" for i in images.listing() if i["id"] == image_id and i["tag"] != "<none>"]
    return {"Id": "sha256:" + image_id, "RepoTags": tags, "Created": conf.get("created") or "",
            "Architecture": conf.get("architecture", ""), "Os": conf.get("os", ""), "Config": conf.get("config", {}),
            "Size": conf["minidocker"]["size"], "RootFS": {"Type": "layers", "Layers": conf["rootfs"]["diff_ids"]}}


def cmd_pull(args: argparse.Namespace) -> int:
    from lib import registry

    image_id = registry.pull(args.reference, args.platform or "", args.insecure)
    print(f"Status: Downloaded {registry.parse(args.reference)[3]}\nsha256:{image_id}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from lib import images

    images.tag(args.source, args.target)
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    from lib import images

    def remove(ref: str) -> None:
        image_id = images.resolve(ref)  # not lookup: a damaged image's config cannot be read, yet must go
        users = [c for c in state.all_ids() if image_id and container.load(c)["Image"] == "sha256:" + image_id]
        print("\n".join(images.remove(ref, args.force, users)))

    return each(args.images, remove, show=False)


def cmd_save(args: argparse.Namespace) -> int:
    from lib import images

    if args.output:
        images.save(args.images, args.output)
        return 0
    if sys.stdout.isatty():
        raise MinidockerError("cowardly refusing to save to a terminal. Use the -o flag or redirect", 1)
    import shutil
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="minidocker-save-") as archive:
        images.save(args.images, archive.name)
        shutil.copyfileobj(archive, sys.stdout.buffer)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from lib import images

    if args.input:
        print("\n".join(images.load(args.input)))
        return 0
    import shutil
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="minidocker-load-") as copy:  # read twice: checked, then unpacked
        shutil.copyfileobj(sys.stdin.buffer, copy)
        copy.flush()
        print("\n".join(images.load(copy.name)))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from lib import images

    print("sha256:" + images.import_rootfs(args.source, args.reference))
    return 0


def _pull_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", help="os/arch[/variant] from a multi-platform image (default: this host's)")
    p.add_argument("--insecure", action="store_true", help="plain http to a registry not on this machine")
    p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")


def _tag_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("source")
    p.add_argument("target")


def _rmi_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="untag even while a container uses it")
    p.add_argument("images", nargs="+")


def _save_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", help="write to a file, not standard output")
    p.add_argument("images", nargs="+")


def _load_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", help="read from a tar archive file, not standard input")


def _images_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="all images (there are no intermediate ones here)")
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.add_argument("--no-trunc", action="store_true", help="full IDs")
    p.add_argument("-f", "--filter", action="append", default=[], help="dangling=true|false, reference=PATTERN")
    p.add_argument("--format", help="a Go template per image, 'table ...' for columns: '{{.Repository}}:{{.Tag}}'")


def _no_flags(p: argparse.ArgumentParser) -> None:
    pass


def _import_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a root filesystem directory, or a tarball of one")
    p.add_argument("reference", metavar="NAME[:TAG]")




# verb: (function, flags), for cli.parse
VERBS = {
    "images": (cmd_images, _images_flags),
    "pull": (cmd_pull, _pull_flags),
    "tag": (cmd_tag, _tag_flags),
    "rmi": (cmd_rmi, _rmi_flags),
    "save": (cmd_save, _save_flags),
    "load": (cmd_load, _load_flags),
    "import": (cmd_import, _import_flags),
}
