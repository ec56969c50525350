// The per-container shim, as conmon is to podman: a small detached process that outlives the
// agent. It makes itself a child subreaper, runs `runc create` with the container's stdout and
// stderr on pipes it reads, tells the agent (one JSON line on its stdout, then closes it) whether
// the create worked, writes every output line with a timestamp to the container's log (rotated
// at a size, a bounded number of files kept), reaps the container's init process and records
// its exit code. Perl from perl-base (Debian's
// essential set): a few MB per container, where a Node process would take tens.
import fs from 'node:fs';
import path from 'node:path';

/** Log line format: "<unix ms> <o|e> <text>\n"; a line longer than this is split. */
export const MAX_LOG_LINE_BYTES = 16 * 1024;

export const SHIM_SCRIPT = String.raw`#!/usr/bin/perl
# cluster oci shim: shim.pl LOGFILE EXITFILE PIDFILE [--log-max-size BYTES --log-max-files N] -- RUNC ARGS...
use strict;
use warnings;
use Config;

my $usage = "usage: shim.pl LOG EXIT PIDFILE [--log-max-size BYTES --log-max-files N] -- CMD...\n";
my ($log_path, $exit_path, $pid_path, @rest) = @ARGV;
# A max size of 0 never rotates (what a shim started without the options did).
my ($max_size, $max_files) = (0, 1);
while (@rest && $rest[0] ne '--') {
  my ($opt, $val) = splice(@rest, 0, 2);
  die $usage unless defined $val && $val =~ /^[0-9]+$/;
  if ($opt eq '--log-max-size') { $max_size = $val + 0; }
  elsif ($opt eq '--log-max-files' && $val >= 1) { $max_files = $val + 0; }
  else { die $usage; }
}
my ($sep, @cmd) = @rest;
die $usage unless defined $pid_path && defined $sep && $sep eq '--' && @cmd;
my $hires = eval { require Time::HiRes; 1 };
sub now_ms { return $hires ? int(Time::HiRes::time() * 1000) : time() * 1000; }

$SIG{HUP} = 'IGNORE';
$SIG{INT} = 'IGNORE';
$SIG{PIPE} = 'IGNORE';
# PR_SET_CHILD_SUBREAPER: the container's init (runc create's child) becomes ours to reap.
my %prctl = (x86_64 => 157, aarch64 => 167);
my ($arch) = $Config{archname} =~ /^([^-]+)/;
my $nr = $prctl{$arch} or die "shim: unsupported architecture $Config{archname}\n";
syscall($nr, 36, 1, 0, 0, 0) == 0 or die "shim: prctl(PR_SET_CHILD_SUBREAPER): $!\n";

pipe(my $out_r, my $out_w) or die "shim: pipe: $!\n";
pipe(my $err_r, my $err_w) or die "shim: pipe: $!\n";
my $runc = fork();
die "shim: fork: $!\n" unless defined $runc;
if ($runc == 0) {
  open(STDIN, '<', '/dev/null');
  open(STDOUT, '>&', $out_w);
  open(STDERR, '>&', $err_w);
  exec(@cmd) or CORE::exit(127);
}
close($out_w);
close($err_w);

my ($log, $log_bytes);
sub open_log {
  open($log, '>>', $log_path) or return 0;
  $log->autoflush(1);
  $log_bytes = (-s $log) || 0;
  return 1;
}
open_log() or die "shim: $log_path: $!\n";

# Like Docker's json-file driver: the file is closed, then LOG.1 … LOG.(N-1) move one up (the
# oldest goes), LOG becomes LOG.1 and a new LOG starts. A reader that holds the old file open
# keeps reading it; one that sees LOG name another file knows the old one is complete.
sub rotate {
  close($log);
  if ($max_files > 1) {
    for (my $i = $max_files - 2; $i >= 1; $i--) {
      rename("$log_path.$i", "$log_path." . ($i + 1)) if -e "$log_path.$i";
    }
    rename($log_path, "$log_path.1");
  } else {
    unlink($log_path);
  }
  # The folder is going (the container is being removed): the output has nowhere to go.
  open_log() or open($log, '>', '/dev/null');
}

sub write_log {
  my ($line) = @_;
  rotate() if $max_size > 0 && $log_bytes > 0 && $log_bytes + length($line) > $max_size;
  print $log $line;
  $log_bytes += length($line);
}
my %buf = (o => '', e => '');
# Open pipe ends by file descriptor (4-arg select, no modules beyond perl-base's Config).
my %open = (fileno($out_r) => [$out_r, 'o'], fileno($err_r) => [$err_r, 'e']);
my $create_output = '';
my ($runc_status, $init_pid, $init_status);
my $reported = 0;

sub emit {
  my ($stream, $text) = @_;
  if (!$reported) { $create_output .= $text . "\n"; return; }
  write_log(now_ms() . " $stream $text\n");
}

sub pump {
  my ($timeout) = @_;
  if (!%open) { select(undef, undef, undef, $timeout); return; }
  my $rin = '';
  vec($rin, $_, 1) = 1 for keys %open;
  my $ready = select(my $rout = $rin, undef, undef, $timeout);
  return if $ready <= 0;
  for my $fd (keys %open) {
    next unless vec($rout, $fd, 1);
    my ($fh, $name) = @{$open{$fd}};
    my $n = sysread($fh, my $chunk, 65536);
    if (!$n) {
      delete $open{$fd};
      emit($name, $buf{$name}) if length $buf{$name};
      $buf{$name} = '';
      close($fh);
      next;
    }
    $buf{$name} .= $chunk;
    while ($buf{$name} =~ s/^([^\n]*)\n//) { emit($name, $1); }
    while (length($buf{$name}) > ${MAX_LOG_LINE_BYTES}) { emit($name, substr($buf{$name}, 0, ${MAX_LOG_LINE_BYTES}, '')); }
  }
}

sub reap {
  # 1: WNOHANG.
  while ((my $pid = waitpid(-1, 1)) > 0) {
    my $status = $?;
    if ($pid == $runc) { $runc_status = $status; }
    elsif (defined $init_pid && $pid == $init_pid) { $init_status = $status; }
  }
}

sub code_of {
  my ($status) = @_;
  return ($status & 127) ? 128 + ($status & 127) : $status >> 8;
}

sub report {
  my ($json) = @_;
  print STDOUT $json . "\n";
  close(STDOUT);
  open(STDOUT, '>', '/dev/null');
}

sub json_string {
  my ($s) = @_;
  $s =~ s/([\\"])/\\$1/g;
  $s =~ s/\n/\\n/g;
  $s =~ s/([\x00-\x1f])/sprintf('\\u%04x', ord($1))/ge;
  return '"' . $s . '"';
}

# Until runc create is done: its own output is its error message, not the container's.
until (defined $runc_status) {
  pump(0.05);
  reap();
}
if ($runc_status != 0) {
  for (1 .. 25) { last unless %open; pump(0.2); }
  report('{"ok":false,"code":' . code_of($runc_status) . ',"error":' . json_string($create_output) . '}');
  exit 0;
}
open(my $pf, '<', $pid_path) or do {
  report('{"ok":false,"code":0,"error":' . json_string("runc create left no pid file $pid_path") . '}');
  exit 0;
};
$init_pid = <$pf>;
close($pf);
$init_pid =~ s/\s+//g;
$reported = 1;
write_log(now_ms() . " e $_\n") for grep { length } split(/\n/, $create_output);
report('{"ok":true,"pid":' . $init_pid . ',"shimPid":' . $$ . '}');

# The init process may have gone already: reap() picks up what exited meanwhile.
my $drain_deadline;
while (1) {
  pump(0.5);
  reap();
  last if defined $init_status && !%open;
  # A process that escaped the container could hold the pipes open: stop waiting for it.
  $drain_deadline //= time() + 5 if defined $init_status;
  last if defined $drain_deadline && time() > $drain_deadline;
}
my $tmp = "$exit_path.tmp";
open(my $ef, '>', $tmp) or die "shim: $tmp: $!\n";
print $ef '{"exitCode":' . code_of($init_status) . ',"signal":' . ($init_status & 127) . ',"finishedAtMs":' . now_ms() . "}\n";
close($ef);
rename($tmp, $exit_path) or die "shim: rename $tmp: $!\n";
exit 0;
`;

/** Writes the shim where the runtime runs it from (atomically: a running shim keeps its copy). */
export function installShim(dir: string): string {
  const target = path.join(dir, 'shim.pl');
  let current: string | undefined;
  try {
    current = fs.readFileSync(target, 'utf8');
  } catch {
    current = undefined;
  }
  if (current !== SHIM_SCRIPT) {
    const tmp = `${target}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, SHIM_SCRIPT, { mode: 0o755 });
    fs.renameSync(tmp, target);
  }
  return target;
}
