#!/bin/sh
# Finishes the step image's root filesystem. Runs as root inside it, after the Debian packages of
# images/packages.txt are installed and the Python packages (images/requirements.txt and the
# rollguard wheel) are unpacked into /opt/rollguard/lib/pythonX.Y/site-packages:
#   images/build.py runs it through chroot, images/Dockerfile as a RUN step; both builds get the
#   same user, launcher, bytecode and cuts from this one script.
# Every cut removes something no step runs; images/README.md lists what each one saves, and
# tests/test_step_image.py runs the steps (git over a path and HTTP, ssh, Kubernetes and Prometheus
# clients) in the built image.
set -eu

PYTHON="$(readlink -f /usr/bin/python3)"        # Debian's interpreter, e.g. /usr/bin/python3.11
PYVER="${PYTHON##*/python}"
VENV=/opt/rollguard
SITE="$VENV/lib/python$PYVER/site-packages"
[ -d "$SITE" ] || { echo "finish.sh: $SITE is missing: install the Python packages first" >&2; exit 1; }

# --- the user: uid/gid 65532 with passwd and group entries (OpenSSH refuses a uid it cannot look
# up), home /tmp, no login shell; --no-log-init: no lastlog/faillog records (sparse, ~19 MB for 65532)
groupadd --gid 65532 rollguard
useradd --uid 65532 --gid 65532 --no-create-home --no-log-init --home-dir /tmp \
    --shell /usr/sbin/nologin --comment "rollguard step" rollguard

# --- the virtualenv around the installed packages, and the `rollguard` launcher from the wheel's
# console_scripts entry point (pip --target wrote launchers for the build machine's Python: dropped)
rm -rf "$SITE/bin"
"$PYTHON" -m venv --without-pip "$VENV"
"$VENV/bin/python" - "$VENV/bin/rollguard" <<'EOF'
import sys
from importlib.metadata import entry_points

(point,) = entry_points(group="console_scripts", name="rollguard")
module, _, function = point.value.partition(":")
with open(sys.argv[1], "w", encoding="utf-8") as launcher:
    launcher.write(f"#!{sys.prefix}/bin/python\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n")
EOF
chmod 0755 "$VENV/bin/rollguard"
rm -f "$VENV"/bin/activate* "$VENV"/bin/Activate.ps1   # nobody activates it: PATH has /opt/rollguard/bin
ln -sf "$VENV/bin/rollguard" /usr/local/bin/rollguard

# --- cuts in the Python packages
rm -rf "$SITE/kubernetes/aio"                  # the client's async copy; rollguard never imports it
find "$SITE" -depth \( -type d \( -name tests -o -name __pycache__ \) -o -type f \( -name '*_test.py' \
    -o -name 'test_*.py' -o -name '*.pyi' \) \) -exec rm -rf {} +

# --- cuts in the Debian packages. Perl: Debian's git depends on it for a few Perl commands
# (add--interactive's old copy, instaweb, send-email...), debconf and adduser for package scripts;
# clone, commit, fetch and push never run it. Purged with dpkg so the package database says so.
# Also what a debian:SUITE-slim base (images/Dockerfile) has beyond mmdebstrap's essential set and
# packages.txt, so that both builds hold the same packages: apt and its keys, e2fsprogs, mount,
# tzdata (Python reads the tzdata package of requirements.txt), and what only those need.
dpkg --purge --force-depends --force-remove-essential --force-remove-protected \
    git-man liberror-perl perl libperl5.36 perl-modules-5.36 libgdbm-compat4 libgdbm6 \
    usrmerge usr-is-merged libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl \
    apt libapt-pkg6.0 gpgv debian-archive-keyring libseccomp2 libstdc++6 libxxhash0 \
    e2fsprogs libext2fs2 libss2 logsave mount tzdata \
    adduser debconf perl-base > /dev/null 2>&1 || true
for package in perl-base perl git-man debconf apt; do
    if dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q ' installed'; then
        echo "finish.sh: could not purge $package" >&2; exit 1
    fi
done
rm -rf /var/cache/debconf /usr/share/perl5 /usr/share/perl /usr/lib/*-linux-gnu/perl*
# (apt's configuration and state folders stay for the build tool: mmdebstrap cleans its own up
# afterwards, images/build.py and images/Dockerfile remove them when it is done)
# git: servers, mail and IMAP, dumb-HTTP push (WebDAV), scalar, GUI merge tools, Perl commands;
# the second copy of the git binary becomes a hard link
cd /usr/lib/git-core
rm -rf git-daemon git-shell git-http-backend git-imap-send git-http-push scalar \
    git-instaweb git-add--interactive git-web--browse mergetools /usr/share/gitweb
rm -f /usr/bin/git-shell /usr/bin/scalar
ln -f /usr/lib/git-core/git /usr/bin/git
cd /
# OpenSSH client: git runs `ssh` only (no agent, scp, sftp, key tools; no setuid ssh-keysign)
rm -f /usr/bin/scp /usr/bin/sftp /usr/bin/ssh-add /usr/bin/ssh-agent /usr/bin/ssh-keyscan \
    /usr/bin/ssh-keygen /usr/bin/ssh-argv0 /usr/bin/ssh-copy-id /usr/lib/openssh/ssh-keysign \
    /usr/lib/openssh/ssh-pkcs11-helper /usr/lib/openssh/ssh-sk-helper
# glibc's iconv modules: nothing converts character sets (git writes UTF-8 commits, Python has its
# own codecs)
rm -rf /usr/lib/*-linux-gnu/gconv
# Python's standard library: help()'s topic texts (pydoc itself stays: kubernetes.watch imports it),
# the test package, turtle graphics
STDLIB="/usr/lib/python$PYVER"
rm -rf "$STDLIB/pydoc_data" "$STDLIB/test" "$STDLIB/turtle.py" "$STDLIB/__pycache__"/turtle.* \
    "$STDLIB/lib-dynload"/_*test*.so
# Whatever the dpkg excludes (images/dpkg-nodoc.cfg) let through, links to what they kept out
# (alternatives of manual pages), and caches
find /usr/share/doc -mindepth 2 ! -type d ! -name copyright -delete
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/locale/* \
    /usr/share/lintian /usr/share/bash-completion /var/cache/ldconfig/aux-cache /var/log/*.log
find -L /etc/alternatives -type l -delete

# --- bytecode, compiled once here (the image is read-only for uid 65532): unchecked-hash .pyc files
# never compare timestamps, so they stay valid whatever mtimes the layer gives the sources.
# The Kubernetes client's generated API and model modules (~32 MB of source, mostly docstrings) are
# kept as bytecode only, compiled with -OO: no docstrings, no asserts (those modules have none),
# tracebacks through them show file and line without the source text.
CLIENT="$SITE/kubernetes/client"
"$PYTHON" -m compileall -q -b -o 2 --invalidation-mode unchecked-hash "$CLIENT/api" "$CLIENT/models"
find "$CLIENT/api" "$CLIENT/models" -name '*.py' -delete
"$PYTHON" -m compileall -q --invalidation-mode unchecked-hash "$SITE"

"$VENV/bin/rollguard" --help > /dev/null
git --version > /dev/null
