# Plugins for Packer 1.7 and newer (`packer init`). Packer 1.6 rejects this block, so kiln's runner
# leaves this file out when it finds an older Packer.
packer {
  required_plugins {
    docker = {
      version = ">= 1.0.8"
      source  = "github.com/hashicorp/docker"
    }
    ansible = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/ansible"
    }
    amazon = {
      version = ">= 1.2.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}
