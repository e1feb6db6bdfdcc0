# The flake's checks: what a Nix build sandbox (no network, no services) can run.
# The integration tests need a real registry, containerd and Nix store; they run
# with scripts/test (and .ci/run), not here.
{
  self,
  nixpkgs,
  system,
  pkgs,
}:
let
  inherit (pkgs) lib;
  package = self.packages.${system}.gapbundle;

  # The whole crate: sources, tests and the data they read.
  fullSrc = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      ../tests
      ../bundle-spec
      ../examples
      (lib.fileset.maybeMissing ../benches)
      (lib.fileset.maybeMissing ../build.rs)
      (lib.fileset.maybeMissing ../.cargo)
      (lib.fileset.maybeMissing ../proto)
    ];
  };

  # Runs a cargo command over fullSrc with the package's vendored dependencies
  # (cargoSetupHook points cargo at them; nothing is fetched).
  cargoCheck =
    name: extraInputs: command:
    package.overrideAttrs (old: {
      pname = "gapbundle-${name}";
      src = fullSrc;
      nativeBuildInputs = old.nativeBuildInputs ++ extraInputs;
      buildPhase = ''
        runHook preBuild
        ${command}
        runHook postBuild
      '';
      installPhase = "touch $out";
      doCheck = false;
      dontFixup = true;
    });

  # A NixOS system using the module; `extra` is merged into its configuration.
  nixos =
    extra:
    nixpkgs.lib.nixosSystem {
      modules = [
        self.nixosModules.default
        {
          nixpkgs.hostPlatform = system;
          boot.isContainer = true;
          system.stateVersion = "25.05";
          services.gapbundle = {
            enable = true;
            trustedKeys = [ "release-2026:C7ND0CDH/7XvrHWMsGtpnJ5UAlmU8z5Ng10Bb16a4KI=" ];
            threshold = 1;
            containerdSocket = "/run/k3s/containerd/containerd.sock";
          };
        }
        extra
      ];
    };
  unitFile =
    config: name:
    "${config.systemd.units.${name}.unit}/${name}";
  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  withK3s = (nixos { services.k3s.enable = true; }).config;
  withoutK3s = (nixos { }).config;
in
{
  inherit package;
  inbox-script = self.packages.${system}.gapbundle-inbox; # shellcheck runs in its build

  clippy = cargoCheck "clippy" [ pkgs.clippy ] "cargo clippy --all-targets --offline --locked -- -D warnings";

  # The unit and doc tests; the integration tests need services (see above).
  unit-tests = cargoCheck "unit-tests" [ ] ''
    cargo test --offline --locked --lib --bins
    cargo test --offline --locked --doc
  '';

  fmt =
    pkgs.runCommand "gapbundle-fmt"
      {
        nativeBuildInputs = [
          pkgs.cargo
          pkgs.rustfmt
        ];
      }
      ''
        cp -r ${fullSrc} src && chmod -R u+w src && cd src
        export HOME=$TMPDIR
        cargo fmt --all -- --check
        touch $out
      '';

  # The module in a real NixOS evaluation: assertions hold, the units render, and
  # the service is ordered after k3s exactly when k3s is enabled.
  nixos-module =
    assert lib.assertMsg (failedAssertions withK3s == [ ]) (toString (failedAssertions withK3s));
    pkgs.runCommand "gapbundle-nixos-module" { } ''
      set -x
      service=${unitFile withK3s "gapbundle-inbox.service"}
      grep -q '^ExecStart=.*gapbundle-inbox --inbox /var/lib/gapbundle/inbox ' "$service"
      grep -q '^ExecStart=.* --trust /nix/store/[^ ]*-gapbundle-trusted-keys ' "$service"
      grep -q '^ExecStart=.* --containerd /run/k3s/containerd/containerd.sock' "$service"
      grep -q '^After=.*k3s.service' "$service"
      grep -q '^Wants=.*k3s.service' "$service"
      # (not `! grep`: errexit ignores a negated command)
      if grep -q 'k3s.service' ${unitFile withoutK3s "gapbundle-inbox.service"}; then
        echo "ordered after k3s although services.k3s.enable is false" >&2
        exit 1
      fi
      grep -q '^PathExistsGlob=/var/lib/gapbundle/inbox/\*.gapb' ${unitFile withK3s "gapbundle-inbox.path"}
      touch $out
    '';
}
