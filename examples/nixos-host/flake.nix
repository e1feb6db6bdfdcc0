# The connected side of a disconnected NixOS host: its whole system, and one extra
# package, as flake outputs that bundle.yaml names. Everything the host runs comes
# from here, including gapbundle's NixOS module, so later bundles import themselves.
{
  description = "gapbundle example: a NixOS system and a package for a host with no network";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
    # This repository, two folders up. In your own flake use the URL you get
    # gapbundle from, and make it follow your nixpkgs:
    gapbundle.url = "path:../..";
    gapbundle.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs =
    {
      self,
      nixpkgs,
      gapbundle,
    }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
    in
    {
      # A small service of our own, bundled with a GC root of its own.
      packages.${system}.agent = pkgs.writeShellApplication {
        name = "edge-agent";
        runtimeInputs = [ pkgs.curl ];
        text = ''
          echo "edge agent on $(hostname)"
        '';
      };

      nixosConfigurations.edge = nixpkgs.lib.nixosSystem {
        modules = [
          gapbundle.nixosModules.default
          (
            { pkgs, ... }:
            {
              nixpkgs.hostPlatform = system;
              system.stateVersion = "25.05";
              networking.hostName = "edge";
              # Replace with the host's real hardware configuration.
              boot.loader.grub.device = "/dev/sda";
              fileSystems."/" = {
                device = "/dev/disk/by-label/nixos";
                fsType = "ext4";
              };

              services.k3s.enable = true;
              environment.systemPackages = [ self.packages.${system}.agent ];

              # The release key signs both the bundles and (as a Nix key) their
              # store paths, so Nix trusts what gapbundle imports.
              nix.settings.trusted-public-keys = [
                "release-2026:REPLACE-WITH-THE-OUTPUT-OF-gapbundle-key-public="
              ];
              services.gapbundle = {
                enable = true;
                trustedKeys = [ "release-2026:REPLACE-WITH-THE-OUTPUT-OF-gapbundle-key-public=" ];
                # K3s's containerd and folders are the defaults; the service runs after k3s.
                # Activate the system a bundle carries (its `activate: switch`), with
                # rollback to the running generation when the switch fails.
                activate = "switch";
              };
            }
          )
        ];
      };
    };
}
