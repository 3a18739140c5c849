#!/usr/bin/env bash
# scripts/install --destdir stages a package: every file lands under the
# staging folder, while iocore.pc names the final prefix and libdir
# (--libdir); --lua puts the Lua module beside them; nothing is written
# outside the staging folder.
. "$(dirname "$0")/lib.sh"
need pkg-config
stage=$tmp/stage
timeout -k 5 600 scripts/install --prefix /opt/iocore-test --libdir /opt/iocore-test/lib64 --destdir "$stage" \
  --lua > "$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "scripts/install --destdir failed"; }
[[ ! -e /opt/iocore-test ]] || fail "files written to /opt/iocore-test, outside the staging folder"
for f in include/iocore.h lib64/libiocore.a lib64/libiocore.so lib64/pkgconfig/iocore.pc \
         lib/lua/5.4/iocore.so; do
  [[ -f $stage/opt/iocore-test/$f ]] || fail "$f not staged"
done
while IFS= read -r f; do
  [[ -f $stage/opt/iocore-test/share/lua/5.4/${f#lua/} ]] || fail "$f not staged"
done < <(find lua -name '*.lua' 2>/dev/null)
pc=$stage/opt/iocore-test/lib64/pkgconfig/iocore.pc
got=$(PKG_CONFIG_PATH=${pc%/*} pkg-config --cflags --libs iocore) || fail "pkg-config on the staged .pc"
got=${got% }
[[ $got == "-I/opt/iocore-test/include -L/opt/iocore-test/lib64 -liocore" ]] ||
  fail "the staged iocore.pc says '$got'"
echo "ok: staged under $stage; iocore.pc says: $got"
