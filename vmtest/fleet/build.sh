set -e
if [ "$fail" = 1 ]; then
  echo "error: deliberate build failure in $label" >&2
  exit 1
fi
[ "$sleep" = 0 ] || sleep "$sleep"
mkdir -p "$out/bin" "$out/sw/bin"
# What the admin user's login shell and the operator's `fabric` resolve to.
ln -s /bin/bash "$out/sw/bin/bash"
[ -z "$fabric" ] || ln -s "$fabric/bin/fabric" "$out/sw/bin/fabric"
[ "$unhealthy" = 0 ] || echo "this generation fails its health check" > "$out/unhealthy"
cat > "$out/bin/switch-to-configuration" <<EOS
#!/bin/sh
mkdir -p /var/lib/vmtest
echo "$label $rev \$*" >> /var/lib/vmtest/switch.log
case "\${1-}" in switch|test) ln -sfn $out /run/current-system ;; esac
exit $code
EOS
chmod +x "$out/bin/switch-to-configuration"
