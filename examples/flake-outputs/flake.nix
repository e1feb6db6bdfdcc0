# Images and manifests as flake outputs, the way Nix users write them:
#   app-image   an OCI archive: an image built by dockerTools, converted with skopeo
#   manifests   rendered YAML: `helm template` of ./chart, then `kustomize build`
#               of ./overlay over it
# bundle.yaml beside this file names both with `installable:`.
{
  description = "gapbundle example: images and Kubernetes manifests that are flake outputs";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs =
    { nixpkgs, ... }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};

      image = pkgs.dockerTools.buildLayeredImage {
        name = "example.local/app";
        tag = "1.0";
        contents = [ pkgs.busybox ];
        config.Cmd = [
          "httpd"
          "-f"
          "-p"
          "8080"
        ];
      };
    in
    {
      # gapbundle reads OCI and docker archives; the output is the archive file.
      packages.${system} = {
        app-image = pkgs.runCommand "app-image-oci.tar" { nativeBuildInputs = [ pkgs.skopeo ]; } ''
          skopeo --insecure-policy --tmpdir "$TMPDIR" copy \
            docker-archive:${image} oci-archive:$out:example.local/app:1.0
        '';

        manifests =
          pkgs.runCommand "app-manifests.yaml"
            {
              nativeBuildInputs = [
                pkgs.kubernetes-helm
                pkgs.kustomize
              ];
            }
            ''
              export HOME=$TMPDIR
              mkdir work
              cp ${./overlay}/kustomization.yaml work/
              helm template web ${./chart} --namespace apps > work/rendered.yaml
              kustomize build work > $out
            '';
      };
    };
}
