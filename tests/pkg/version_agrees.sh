#!/usr/bin/env bash
# One version everywhere: IOC_VERSION_STRING (C), iocore.version (Lua, from
# the installed module), the installed iocore.pc (pkg-config --modversion),
# the rockspec (file name and `version`), and a CHANGELOG.md section.
. "$(dirname "$0")/lib.sh"
need pkg-config
v=$(header_version)
[[ $v =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "IOC_VERSION_STRING '$v' is not MAJOR.MINOR.PATCH"
parts=$(awk '/^#define IOC_VERSION_(MAJOR|MINOR|PATCH) / { printf "%s%s", sep, $3; sep = "." }' src/include/iocore.h)
[[ $parts == "$v" ]] || fail "IOC_VERSION_MAJOR/MINOR/PATCH say $parts, IOC_VERSION_STRING $v"

prefix=$tmp/prefix
timeout -k 5 600 scripts/install --prefix "$prefix" --lua > "$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; fail "scripts/install --prefix --lua failed"; }
pc=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --modversion iocore) || fail "pkg-config --modversion"
[[ $pc == "$v" ]] || fail "iocore.pc says $pc, the header $v"

lv=$(cd / && LUA_PATH="$prefix/share/lua/5.4/?.lua" LUA_CPATH="$prefix/lib/lua/5.4/?.so" \
     timeout -k 5 30 lua5.4 -e 'io.write(require("iocore").version)') || fail "lua5.4 could not load the module"
[[ $lv == "$v" ]] || fail "iocore.version says $lv, the header $v"

shopt -s nullglob
specs=(*.rockspec)
[[ ${#specs[@]} -eq 1 ]] || fail "want exactly one rockspec at the top, found ${#specs[@]}: ${specs[*]}"
[[ ${specs[0]} =~ ^iocore-([0-9.]+)-([0-9]+)\.rockspec$ ]] || fail "rockspec name ${specs[0]}"
[[ ${BASH_REMATCH[1]} == "$v" ]] || fail "rockspec file ${specs[0]} is not version $v"
rv=$(SPEC=${specs[0]} timeout -k 5 30 lua5.4 -e \
     'local t = {}; assert(loadfile(os.getenv("SPEC"), "t", t))(); io.write(t.package, " ", t.version)') || fail "rockspec does not load"
[[ $rv == "iocore $v-${BASH_REMATCH[2]}" ]] || fail "rockspec says '$rv', want 'iocore $v-${BASH_REMATCH[2]}'"

grep -qE "^## \[$v\]" CHANGELOG.md || fail "CHANGELOG.md has no '## [$v]' section"
echo "ok: version $v in iocore.h, iocore.version, iocore.pc, ${specs[0]} and CHANGELOG.md"
