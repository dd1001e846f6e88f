#!/bin/sh
# Generate the prod overlay's secret files (git-ignored) with random values, keeping every file
# that already exists: run once per deployment, keep the files somewhere safe (a password
# manager, your secret store), and rotate by replacing a file and re-applying the overlay.
set -eu
cd "$(dirname "$0")"
umask 077
random() {
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}
create() {
    if [ -e "$1" ]; then
        echo "prod secrets: keeping $1"
    else
        printf '%s\n' "$2" >"$1"
        echo "prod secrets: generated $1"
    fi
}
create minio.env "MINIO_ROOT_USER=facerank-$(random | cut -c1-8)
MINIO_ROOT_PASSWORD=$(random)"
create webhook-token.env "token=$(random)"
create api-token.env "token=$(random)"
for component in dead-letter enroll identify notify predictor retrain source web; do
    create "s3-$component.env" "ACCESS_KEY=facerank-$component
SECRET_KEY=$(random)"
done
# Not random: the chat tool's incoming-webhook URL, which you paste in (empty: notifications off).
create notify-webhook.env "url="
