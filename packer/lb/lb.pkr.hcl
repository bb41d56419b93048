# The load balancer image: Debian's HAProxy baked from the kiln base image. One container of it runs
# in front of each group; kiln writes its configuration and drives its servers over the runtime API.

variable "version" {
  type        = string
  description = "Version name reserved by the kiln catalog."
}

variable "image_name" {
  type        = string
  default     = "lb"
  description = "Catalog image name."
}

variable "base_image" {
  type        = string
  default     = "kiln/base:bookworm"
  description = "Docker base image (made by scripts/setup with debootstrap)."
}

variable "repository" {
  type        = string
  default     = "kiln/lb"
  description = "Docker repository the image is tagged into."
}

source "docker" "lb" {
  image  = var.base_image
  pull   = false
  commit = true
  changes = [
    "EXPOSE 8080",
    "LABEL kiln.image=${var.image_name} kiln.version=${var.image_name}/${var.version}",
    "ENTRYPOINT [\"haproxy\", \"-db\", \"-f\", \"/run/kiln/haproxy.cfg\"]",
    "CMD []",
  ]
}

build {
  sources = ["source.docker.lb"]

  provisioner "ansible" {
    playbook_file = "${path.root}/playbook.yml"
    # the Ansible kiln runs with is known: no `ansible-playbook --version` first (a second of CPU a build)
    skip_version_check = true
    extra_arguments = [
      "--extra-vars", "ansible_host=${build.ID} ansible_connection=community.docker.docker",
    ]
    ansible_env_vars = ["ANSIBLE_CONFIG=${path.root}/../../ansible.cfg"]
  }

  post-processor "docker-tag" {
    repository = var.repository
    tags       = [var.version]
  }
}
