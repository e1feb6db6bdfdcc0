# services.gapbundle: import signed gapbundle bundles on a disconnected NixOS host.
#
# Copy a bundle (*.gapb) into the inbox folder -- by hand, with rsync, or from a USB
# disk -- and a systemd path unit starts gapbundle-inbox.service, which verifies and
# imports it with `gapbundle import` (into the Nix store, K3s's containerd and K3s's
# folders, as the bundle and the options below say), then moves it to processed/ or
# failed/ next to a receipt (<bundle>.receipt.json: the import's JSON output, exit
# code and time). A bundle whose digest was imported once is never imported again.
#
# Usable two ways:
#   * from the flake: `gapbundle.nixosModules.default` imports this file and sets
#     `package` to the flake's build for the host's system;
#   * standalone: `imports = [ "${gapbundle-src}/nix/module.nix" ]` -- then `package`
#     defaults to `pkgs.gapbundle`, which exists once the flake's overlay
#     (`gapbundle.overlays.default`) is applied; otherwise set `package` yourself.
#     An assertion says so when neither happened.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    mkDefault
    types
    literalExpression
    ;

  cfg = config.services.gapbundle;

  # Keys given as text go into one store file; paths are used as they are (a path
  # literal is copied into the store; a string like "/etc/gapbundle/keys" stays a
  # runtime path, e.g. a folder managed outside Nix).
  isKeyFile = k: builtins.isPath k || lib.hasPrefix "/" k;
  keyTexts = builtins.filter (k: !isKeyFile k) cfg.trustedKeys;
  keyFiles = map (k: if builtins.isPath k then "${k}" else k) (builtins.filter isKeyFile cfg.trustedKeys);
  keyTextFile = pkgs.writeText "gapbundle-trusted-keys" (lib.concatMapStrings (k: k + "\n") keyTexts);
  trustFiles = lib.optional (keyTexts != [ ]) "${keyTextFile}" ++ keyFiles;

  # Arguments for `gapbundle import`; a null option leaves its flag out, so the
  # binary's own default (K3s's socket and folder, the local Nix store) applies.
  importArgs =
    lib.concatMap (f: [
      "--trust"
      f
    ]) trustFiles
    ++ [
      "--threshold"
      (toString cfg.threshold)
    ]
    ++ lib.optionals (cfg.nixStore != null) [
      "--nix-store"
      cfg.nixStore
    ]
    ++ lib.optionals (cfg.containerdSocket != null) [
      "--containerd"
      (toString cfg.containerdSocket)
    ]
    ++ lib.optionals (cfg.k3sRoot != null) [
      "--k3s-root"
      (toString cfg.k3sRoot)
    ]
    ++ [
      "--activation"
      cfg.activate
    ]
    ++ cfg.extraArgs;

  inboxScript = import ./inbox.nix {
    inherit lib;
    inherit (pkgs)
      writeShellApplication
      coreutils
      jq
      util-linux
      ;
    gapbundle = cfg.package;
  };

  isPlain = s: builtins.match "[A-Za-z0-9_./:=@+,-]+" s != null;

  # One ExecStart argument: bare when it is plain, otherwise quoted the way NixOS's
  # utils.escapeSystemdExecArg does (JSON string; `%` and `$` doubled for systemd).
  execArg =
    arg:
    let
      s = toString arg;
    in
    if isPlain s then s else lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s);

  # tmpfiles.d paths may be quoted, with C-style escapes (JSON's, for these cases).
  tmpfilesPath =
    p:
    let
      s = toString p;
    in
    if isPlain s then s else builtins.toJSON s;

  k3s = config.services.k3s.enable or false;
in
{
  options.services.gapbundle = {
    enable = mkEnableOption "importing gapbundle bundles dropped into an inbox folder";

    package = mkOption {
      type = types.nullOr types.package;
      default = pkgs.gapbundle or null;
      defaultText = literalExpression "pkgs.gapbundle or null (the flake's module sets its own build)";
      description = ''
        The gapbundle package. The flake's `nixosModules.default` sets it to the
        flake's build; when this file is imported on its own, apply the flake's
        `overlays.default` or set it explicitly.
      '';
    };

    trustedKeys = mkOption {
      type = types.listOf (types.either types.path types.str);
      default = [ ];
      example = literalExpression ''
        [
          "release-2026:K1cV5Rzq1wWJ0LQW8J3m3bP2k3x0rR3Ue0n1v6S0kDQ="
          ./keys/release-2027.pub
          "/etc/gapbundle/trusted.d"
        ]
      '';
      description = ''
        Public keys a bundle must be signed by, in Nix's `name:base64` format
        (`gapbundle key public`, `nix key convert-secret-to-public`). A string is a
        key; a path, or a string starting with `/`, is a key file (one key per line,
        as in `trusted-public-keys`) or a folder of them, passed to `--trust` as is.
      '';
    };

    threshold = mkOption {
      type = types.ints.positive;
      default = 1;
      description = "How many distinct trusted keys must have signed a bundle (`--threshold`).";
    };

    inbox = mkOption {
      type = types.path;
      default = "/var/lib/gapbundle/inbox";
      description = ''
        Folder watched for bundles (`*.gapb`, top level only; names starting with a
        dot are ignored, so `rsync`'s temporary files are). Bundles are filed into
        its `processed/` and `failed/` subfolders, so it must be writable and on
        one file system with them. A bundle still being copied is imported once its
        size has not changed for `settleSeconds`; copying to a temporary name and
        renaming to `*.gapb` at the end is safer still.
      '';
    };

    stateDir = mkOption {
      type = types.path;
      default = "/var/lib/gapbundle";
      description = ''
        Where the record of imported bundle digests (`imported/`) and the lock are
        kept. It is separate from the inbox so that wiping or swapping the inbox
        never allows a bundle to be imported twice.
      '';
    };

    settleSeconds = mkOption {
      type = types.ints.unsigned;
      default = 5;
      description = "A bundle is imported once its size and mtime stay unchanged this long.";
    };

    containerdSocket = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/containerd/containerd.sock";
      description = "containerd socket for images (`--containerd`); null keeps the default, K3s's socket.";
    };

    k3sRoot = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/rancher/k3s";
      description = "K3s data folder (`--k3s-root`); null keeps the default, /var/lib/rancher/k3s.";
    };

    nixStore = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "local?root=/mnt/target";
      description = "Nix store or binary cache for Nix paths (`--nix-store`); null keeps the local store.";
    };

    activate = mkOption {
      type = types.enum [
        "none"
        "boot"
        "switch"
      ];
      default = "none";
      example = "switch";
      description = ''
        Whether the inbox activates the NixOS system a bundle carries (a `nix:`
        entry with `activate`, format.md 14.8), after every path is imported:
        `none` only imports it (`gapbundle activate NAME` does it later, from the
        receipt); `boot` makes it the boot default at most (a bundle asking for
        `switch` gets `boot`, one asking for `test` is not activated); `switch`
        does what the bundle asks. A new generation of /nix/var/nix/profiles/system,
        then its `switch-to-configuration`; when that fails the previous generation
        is activated again and the bundle is filed under failed/ with exit code 7
        (8 when going back failed too). Needs `nixStore` null (the host's own store).
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--skip-manifests"
        "--namespace"
        "k8s.io"
      ];
      description = "More arguments for `gapbundle import` (see `gapbundle import --help`).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.package != null;
        message = "services.gapbundle.package is null: import gapbundle's nixosModules.default, apply its overlays.default, or set services.gapbundle.package.";
      }
      {
        assertion = cfg.activate == "none" || cfg.nixStore == null;
        message = "services.gapbundle.activate is ${cfg.activate}, but nixStore is set: only the host's own store (nixStore = null) can be activated.";
      }
      {
        assertion = cfg.trustedKeys != [ ] || builtins.elem "--allow-unsigned" cfg.extraArgs;
        message = "services.gapbundle.trustedKeys is empty: give the public keys bundles must be signed by (or pass --allow-unsigned in extraArgs, which trusts anyone).";
      }
      {
        assertion = keyFiles != [ ] || cfg.threshold <= builtins.length keyTexts || cfg.trustedKeys == [ ];
        message = "services.gapbundle.threshold (${toString cfg.threshold}) is larger than the number of trusted keys (${toString (builtins.length keyTexts)}): no bundle could ever be imported.";
      }
    ];

    environment.systemPackages = lib.optional (cfg.package != null) cfg.package;

    systemd.tmpfiles.rules = map (d: "d ${tmpfilesPath d} 0750 root root - -") [
      cfg.stateDir
      "${toString cfg.stateDir}/imported"
      cfg.inbox
      "${toString cfg.inbox}/processed"
      "${toString cfg.inbox}/failed"
    ];

    systemd.paths.gapbundle-inbox = {
      description = "Watch ${toString cfg.inbox} for gapbundle bundles";
      wantedBy = [ "multi-user.target" ];
      # PathExistsGlob, not DirectoryNotEmpty: processed/ and failed/ live in the
      # inbox, so the folder is never empty and DirectoryNotEmpty would trigger
      # forever. The glob matches only bundles waiting at the top level, and systemd
      # checks it again when the service stops.
      pathConfig = {
        PathExistsGlob = "${toString cfg.inbox}/*.gapb";
        Unit = "gapbundle-inbox.service";
        MakeDirectory = mkDefault true;
        DirectoryMode = mkDefault "0750";
      };
    };

    systemd.services.gapbundle-inbox = {
      description = "Import gapbundle bundles from ${toString cfg.inbox}";
      documentation = [ "man:gapbundle-import(1)" ];
      after = [ "local-fs.target" ] ++ lib.optional k3s "k3s.service";
      wants = lib.optional k3s "k3s.service";
      # Importing Nix paths runs Nix's own tools; kubectl etc. can be added here.
      path = lib.optional ((config.nix.package or null) != null) config.nix.package;
      # The switch this service runs must not stop it halfway: a system whose
      # inbox unit changed would otherwise restart it during its own activation.
      restartIfChanged = mkDefault (cfg.activate == "none");
      serviceConfig = {
        Type = "oneshot";
        ExecStart = lib.concatMapStringsSep " " execArg (
          [
            "${inboxScript}/bin/gapbundle-inbox"
            "--inbox"
            cfg.inbox
            "--state-dir"
            cfg.stateDir
            "--settle"
            cfg.settleSeconds
            "--"
          ]
          ++ importArgs
        );
        # Big bundles take as long as they take.
        TimeoutStartSec = mkDefault "infinity";
        Nice = mkDefault 10;
        IOSchedulingClass = mkDefault "best-effort";
        IOSchedulingPriority = mkDefault 7;
        PrivateTmp = mkDefault true;
        NoNewPrivileges = mkDefault true;
        UMask = mkDefault "0022";
      };
    };
  };
}
