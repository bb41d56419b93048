# The sample golden image: a web server baked from the kiln base image by the golden_image role.
# Built locally with the docker source; the amazon-ebs source is the same image for AWS.

variable "version" {
  type        = string
  description = "Version name reserved by the kiln catalog; the image answers image/version on /version."
}

variable "image_name" {
  type        = string
  default     = "web"
  description = "Catalog image name."
}

variable "base_image" {
  type        = string
  default     = "kiln/base:bookworm"
  description = "Docker base image (made by scripts/setup with debootstrap)."
}

variable "repository" {
  type        = string
  default     = "kiln/web"
  description = "Docker repository the image is tagged into."
}

variable "fault" {
  type        = string
  default     = ""
  description = "Fault injection for roll-back tests: unhealthy (/healthz answers 503), errors (a share of / answers 500), slow (/ is slow)."
}

variable "slow_rate" {
  type        = string
  default     = "2k"
  description = "With fault slow: bytes a second the page / is sent at (nginx limit_rate); 2k takes about a second, 600 about five; a request may ask for its own (/?rate=600)."
}

variable "aws_region" {
  type    = string
  default = "eu-west-1"
}

variable "aws_source_ami" {
  type        = string
  default     = "ami-00000000000000000"
  description = "Debian 12 AMI to start from (look it up per region)."
}

variable "aws_ami_regions" {
  type        = list(string)
  default     = []
  description = "Other regions the AMI is copied to; kiln records the AMI id of each."
}

variable "aws_endpoint" {
  type        = string
  default     = env("AWS_ENDPOINT_URL")
  description = "Another EC2 endpoint (a local AWS API): nothing boots there, so no provisioner runs."
}

source "docker" "web" {
  image  = var.base_image
  pull   = false
  commit = true
  changes = [
    "USER web",
    "EXPOSE 8080",
    "WORKDIR /srv/data",
    "LABEL kiln.image=${var.image_name} kiln.version=${var.image_name}/${var.version}",
    "ENTRYPOINT [\"nginx\", \"-e\", \"stderr\", \"-g\", \"daemon off;\"]",
    "CMD []",
  ]
}

source "amazon-ebs" "web" {
  region        = var.aws_region
  source_ami    = var.aws_source_ami
  instance_type = "t3.micro"
  ssh_username  = "admin"
  ami_name      = "kiln-${var.image_name}-${var.version}"
  ami_regions   = var.aws_ami_regions
  tags = {
    "kiln:image"   = var.image_name
    "kiln:version" = "${var.image_name}/${var.version}"
  }
  snapshot_tags = {
    "kiln:image"   = var.image_name
    "kiln:version" = "${var.image_name}/${var.version}"
  }
  # A local AWS API (AWS_ENDPOINT_URL) knows no real regions or credentials and boots nothing.
  custom_endpoint_ec2        = var.aws_endpoint
  skip_region_validation     = var.aws_endpoint != ""
  skip_credential_validation = var.aws_endpoint != ""
  skip_metadata_api_check    = var.aws_endpoint != ""
  communicator               = var.aws_endpoint != "" ? "none" : "ssh"
}

build {
  sources = ["source.docker.web", "source.amazon-ebs.web"]

  provisioner "ansible" {
    only          = ["docker.web"]
    playbook_file = "${path.root}/playbook.yml"
    # the Ansible kiln runs with is known: no `ansible-playbook --version` first (a second of CPU a build)
    skip_version_check = true
    extra_arguments = [
      "--extra-vars", "ansible_host=${build.ID} ansible_connection=community.docker.docker",
      "--extra-vars", "golden_image_version=${var.image_name}/${var.version} golden_image_fault=${var.fault} golden_image_slow_rate=${var.slow_rate}",
    ]
    ansible_env_vars = ["ANSIBLE_CONFIG=${path.root}/../../ansible.cfg"]
  }

  provisioner "ansible" {
    only          = ["amazon-ebs.web"]
    playbook_file = "${path.root}/playbook.yml"
    user          = "admin"
    extra_arguments = [
      "--become",
      "--extra-vars", "golden_image_version=${var.image_name}/${var.version} golden_image_fault=${var.fault} golden_image_slow_rate=${var.slow_rate}",
      # nothing boots on a local AWS API (aws_endpoint): the playbook provisions nothing there
      "--extra-vars", "kiln_local_aws_api=${var.aws_endpoint != "" ? "true" : "false"}",
    ]
    ansible_env_vars = ["ANSIBLE_CONFIG=${path.root}/../../ansible.cfg"]
  }

  post-processor "docker-tag" {
    only       = ["docker.web"]
    repository = var.repository
    tags       = [var.version]
  }
}
