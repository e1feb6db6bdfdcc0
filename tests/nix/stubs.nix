# Stand-ins for the NixOS options and packages nix/module.nix uses, so the module can
# be evaluated with nixpkgs' own lib.evalModules and nothing else (tests/it/flake.rs;
# nixpkgs itself cannot be fetched on the test machines).
#
# The declarations merge like NixOS's: lists concatenate, and attribute sets such as
# serviceConfig merge per attribute, so mkDefault / mkForce priorities resolve the
# same way. The packages are fakes with plausible store paths, except writeText,
# which really writes its file with builtins.toFile so a test can read it back.
{
  pkgsHasGapbundle ? true,
}:
{ lib, ... }:
let
  inherit (lib) mkOption types;
  fakeDrv = name: extra: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  } // extra;
  unitOptions = {
    description = mkOption {
      type = types.str;
      default = "";
    };
    documentation = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    after = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    wants = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    requires = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    wantedBy = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
  };
  service = types.submodule {
    options = unitOptions // {
      path = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      environment = mkOption {
        type = types.attrsOf types.str;
        default = { };
      };
      serviceConfig = mkOption {
        type = types.attrsOf types.unspecified;
        default = { };
      };
      # As NixOS's: whether switch-to-configuration restarts the unit when its
      # definition changed.
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
    };
  };
  path = types.submodule {
    options = unitOptions // {
      pathConfig = mkOption {
        type = types.attrsOf types.unspecified;
        default = { };
      };
    };
  };
  pkgs = {
    stdenv.hostPlatform.system = "x86_64-linux";
    writeText = name: text: builtins.toFile name text;
    writeShellApplication =
      args:
      fakeDrv args.name {
        inherit (args) text runtimeInputs;
      };
    coreutils = fakeDrv "coreutils-9.5" { };
    jq = fakeDrv "jq-1.7.1" { };
    util-linux = fakeDrv "util-linux-2.40" { };
  } // lib.optionalAttrs pkgsHasGapbundle { gapbundle = fakeDrv "gapbundle-0.1.0" { }; };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    nix.package = mkOption {
      type = types.unspecified;
      default = fakeDrv "nix-2.28.4" { };
    };
    services.k3s.enable = mkOption {
      type = types.bool;
      default = false;
    };
    systemd.services = mkOption {
      type = types.attrsOf service;
      default = { };
    };
    systemd.paths = mkOption {
      type = types.attrsOf path;
      default = { };
    };
    systemd.tmpfiles.rules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
  };
  config._module.args.pkgs = pkgs;
}
