{
  description = "gapbundle: carry OCI images, Nix closures and Kubernetes manifests across an air gap in one signed bundle file";

  # nixpkgs only. Pin it from your own flake with
  #   inputs.gapbundle.inputs.nixpkgs.follows = "nixpkgs";
  # This repository commits no flake.lock (it is developed where nixpkgs cannot be
  # fetched); run `nix flake lock` once on a connected machine.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
    in
    {
      overlays.default = final: _prev: {
        gapbundle = final.callPackage ./nix/package.nix { };
      };

      packages = forAllSystems (
        system: pkgs: {
          default = self.packages.${system}.gapbundle;
          gapbundle = pkgs.callPackage ./nix/package.nix { };
          # What the NixOS module's service runs; usable on any Linux with systemd
          # or cron: gapbundle-inbox --inbox DIR --state-dir DIR -- IMPORT-ARGS...
          gapbundle-inbox = pkgs.callPackage ./nix/inbox.nix { inherit (self.packages.${system}) gapbundle; };
        }
      );

      apps = forAllSystems (
        system: _pkgs: {
          default = {
            type = "app";
            program = "${self.packages.${system}.default}/bin/gapbundle";
          };
        }
      );

      devShells = forAllSystems (
        system: pkgs: {
          default = pkgs.mkShell {
            inputsFrom = [ self.packages.${system}.default ];
            packages = with pkgs; [
              cargo
              rustc
              clippy
              rustfmt
              rust-analyzer
              # The real services and tools the integration tests drive.
              nix
              containerd
              skopeo
              umoci
              kubernetes-helm
              kustomize
              kubectl
              distribution
              # tests/it/support starts the registry under Debian's name for it.
              (writeShellScriptBin "docker-registry" ''exec ${distribution}/bin/registry "$@"'')
              zstd
              protobuf
              apacheHttpd # htpasswd
              jq
              shellcheck
            ];
            PROTOC = "${pkgs.protobuf}/bin/protoc";
            RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
          };
        }
      );

      # services.gapbundle, with `package` defaulting to this flake's build for the
      # host's system (nix/module.nix alone defaults to pkgs.gapbundle).
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.gapbundle.package = lib.mkDefault (
            self.packages.${pkgs.stdenv.hostPlatform.system}.default or (pkgs.callPackage ./nix/package.nix { })
          );
        };

      checks = forAllSystems (
        system: pkgs:
        import ./nix/checks.nix {
          inherit
            self
            nixpkgs
            system
            pkgs
            ;
        }
      );
    };
}
