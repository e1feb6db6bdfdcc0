# The inbox processor as a package: nix/module.nix runs it from a oneshot service.
# The logic lives in gapbundle-inbox.sh so that tests/it/flake.rs runs the very same
# text with bash; writeShellApplication adds the shebang, `set -euo pipefail`, a PATH
# of exactly these inputs, and a shellcheck pass at build time.
{
  lib,
  writeShellApplication,
  coreutils,
  jq,
  util-linux,
  gapbundle,
}:
writeShellApplication {
  name = "gapbundle-inbox";
  runtimeInputs = [
    coreutils # mktemp, mv -T, stat, date
    jq
    util-linux # flock
    gapbundle
  ];
  text = builtins.readFile ./gapbundle-inbox.sh;
  meta = {
    description = "Import every gapbundle bundle dropped into an inbox folder exactly once";
    license = lib.licenses.asl20;
    mainProgram = "gapbundle-inbox";
  };
}
