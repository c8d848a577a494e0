# Sourced by the tools/*.sh scripts: copy this checkout into a scratch directory.
#
#   copy_checkout ROOT DEST
#
# Copies the tracked and the untracked, non-ignored files of ROOT (or, outside a git
# checkout such as an unpacked sdist, everything but build outputs) to DEST, and drops
# any in-place build, so that DEST builds from source like a fresh clone.
copy_checkout() {
    local root=$1 dest=$2
    rm -rf "$dest"
    mkdir -p "$dest"
    if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$root" ls-files -co --exclude-standard -z \
            | (cd "$root" && tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$dest"
    else
        (cd "$root" && tar --exclude=./build --exclude=./dist --exclude=./.venv \
            --exclude='./src/*.c' --exclude=./.git -cf - .) | tar -xf - -C "$dest"
    fi
    find "$dest" \( -name '*.so' -o -name '*.pyd' -o -name '_build_info.py' \) -delete
}
