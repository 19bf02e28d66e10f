#!/bin/sh
# Entry point of the container image, installed as /usr/local/bin/cpa-manager-plus: the
# name of the earlier image's entry point, so `docker run … <image> reset-admin-key` and
# `docker compose run --rm cpa-manager-plus reset-admin-key` keep working.
#
# The earlier image ran as root, so an existing cpa-manager-plus-data volume holds files
# owned by root. Started as root, this script hands exactly cpamp's own files (database,
# WAL, lock, data.key, import sessions) and their directories to the cpamp user, then
# runs cpamp-server as that user. Nothing else on a mounted volume changes owner.
# Started as any other user (`docker run --user …`), it runs cpamp-server directly.
set -eu

# The image creates the user cpamp (uid 10001); CPAMP_USER names another existing user.
user="${CPAMP_USER:-cpamp}"

if [ "$(id -u)" != 0 ]; then
    exec cpamp-server "$@"
fi

group="$(id -gn "$user")"
data_dir="${USAGE_DATA_DIR:-/data}"
db_path="${USAGE_DB_PATH:-$data_dir/usage.sqlite}"
key_path="${CPA_MANAGER_DATA_KEY_PATH:-$data_dir/data.key}"

# The data directory belongs to the user. Another directory (of USAGE_DB_PATH or
# CPA_MANAGER_DATA_KEY_PATH) is given to the user only when this script creates it: an
# existing one may hold other files and keeps its owner.
if [ "$data_dir" = / ]; then
    echo "cpa-manager-plus: USAGE_DATA_DIR must not be /" >&2
    exit 1
fi
mkdir -p "$data_dir"
chown "$user:$group" "$data_dir"
for dir in "$(dirname "$db_path")" "$(dirname "$key_path")"; do
    if [ ! -d "$dir" ]; then
        mkdir -p "$dir"
        chown "$user:$group" "$dir"
    fi
done

# cpamp's own files, where an earlier image may have written them as root. Symbolic links
# are left alone.
for file in "$db_path" "$db_path-wal" "$db_path-shm" "$db_path.manager.lock" "$db_path.inbox" "$key_path"; do
    if [ -f "$file" ] && [ ! -L "$file" ]; then
        chown "$user:$group" "$file"
    fi
done
if [ -d "$data_dir/usage-imports" ] && [ ! -L "$data_dir/usage-imports" ]; then
    chown -R "$user:$group" "$data_dir/usage-imports"
fi

exec setpriv --reuid="$user" --regid="$group" --init-groups -- cpamp-server "$@"
