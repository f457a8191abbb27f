<#
.SYNOPSIS
Installs the Fleetpulse agent as a Windows service (FleetpulseAgent), registers the device with
a collector, and starts it. Run from an elevated PowerShell in the folder holding
fleetpulse-agent.exe and agent.toml (or pass -SourceDir).

.DESCRIPTION
- Copies fleetpulse-agent.exe to "C:\Program Files\Fleetpulse" and agent.toml to
  "%ProgramData%\Fleetpulse\Agent".
- Restricts "%ProgramData%\Fleetpulse\Agent" to SYSTEM and Administrators: it holds the agent
  credential (state.json) and the spool; on Windows the 0600 file mode does not apply.
- Registers with the enrollment token (fleetpulse-agent register), unless already registered.
- Creates the FleetpulseAgent service (LocalSystem, delayed auto start, restart on failure)
  running `fleetpulse-agent.exe service`, the native Service Control Manager entry point.
-Uninstall stops and deletes the service and removes the program folder; the state and spool
folder is kept unless -Purge is given too.

.EXAMPLE
.\install-windows.ps1 -Collector https://collector.example.com:7600 -EnrollmentToken fpe_...
.EXAMPLE
.\install-windows.ps1 -Uninstall -Purge
#>
[CmdletBinding(DefaultParameterSetName = 'Install')]
param(
    [Parameter(Mandatory = $true, ParameterSetName = 'Install')]
    [string] $Collector,
    [Parameter(Mandatory = $true, ParameterSetName = 'Install')]
    [string] $EnrollmentToken,
    [Parameter(ParameterSetName = 'Install')]
    [string] $CaCert,
    [Parameter(ParameterSetName = 'Install')]
    [string] $SourceDir = $PSScriptRoot,
    [Parameter(Mandatory = $true, ParameterSetName = 'Uninstall')]
    [switch] $Uninstall,
    [Parameter(ParameterSetName = 'Uninstall')]
    [switch] $Purge
)

$ErrorActionPreference = 'Stop'
$ServiceName = 'FleetpulseAgent'  # the name the service entry point registers under
$ProgramDir = Join-Path $env:ProgramFiles 'Fleetpulse'
$DataDir = Join-Path $env:ProgramData 'Fleetpulse\Agent'
$Exe = Join-Path $ProgramDir 'fleetpulse-agent.exe'
$Config = Join-Path $DataDir 'agent.toml'
$StateFile = Join-Path $DataDir 'state.json'

$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    throw 'Run this script from an elevated PowerShell (Run as administrator).'
}

function Invoke-Native {
    param([string] $File, [string[]] $Arguments)
    & $File @Arguments
    if ($LASTEXITCODE -ne 0) {
        throw "$File $($Arguments -join ' ') failed with exit code $LASTEXITCODE"
    }
}

if ($Uninstall) {
    if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
        # Stop: the agent flushes for up to 5 s; what is left stays in the spool.
        Stop-Service -Name $ServiceName -ErrorAction SilentlyContinue
        Invoke-Native 'sc.exe' @('delete', $ServiceName)
    }
    Remove-Item -Recurse -Force -ErrorAction SilentlyContinue $ProgramDir
    if ($Purge) {
        Remove-Item -Recurse -Force -ErrorAction SilentlyContinue $DataDir
    }
    Write-Host "Fleetpulse agent removed$(if (-not $Purge) { "; state and spool kept in $DataDir" })."
    return
}

foreach ($file in @('fleetpulse-agent.exe', 'agent.toml')) {
    if (-not (Test-Path (Join-Path $SourceDir $file))) {
        throw "$file not found in $SourceDir (pass -SourceDir)"
    }
}

New-Item -ItemType Directory -Force -Path $ProgramDir, $DataDir | Out-Null
# Only SYSTEM (the service account) and Administrators may read the credential and the spool.
Invoke-Native 'icacls.exe' @($DataDir, '/inheritance:r', '/grant:r', 'SYSTEM:(OI)(CI)F', 'Administrators:(OI)(CI)F')

if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
    Stop-Service -Name $ServiceName -ErrorAction SilentlyContinue
}
Copy-Item -Force (Join-Path $SourceDir 'fleetpulse-agent.exe') $Exe
if (-not (Test-Path $Config)) {
    Copy-Item (Join-Path $SourceDir 'agent.toml') $Config
}

if (Test-Path $StateFile) {
    Write-Host "Already registered ($StateFile); keeping the registration."
} else {
    $registerArgs = @('register', '--config', $Config, '--state-file', $StateFile,
        '--collector', $Collector, '--enrollment-token', $EnrollmentToken)
    if ($CaCert) {
        $registerArgs += @('--ca-cert', $CaCert)
    }
    Invoke-Native $Exe $registerArgs
}

if (-not (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue)) {
    $binPath = "`"$Exe`" service --config `"$Config`" --state-file `"$StateFile`" --log-format json"
    Invoke-Native 'sc.exe' @('create', $ServiceName, 'start=', 'delayed-auto', 'obj=', 'LocalSystem',
        'DisplayName=', 'Fleetpulse Agent', 'binPath=', $binPath)
    Invoke-Native 'sc.exe' @('description', $ServiceName, 'Fleetpulse device agent: ships enrollment state and events to the collector.')
    # Restart after 10 s, then after 60 s; the failure count resets after an hour.
    Invoke-Native 'sc.exe' @('failure', $ServiceName, 'reset=', '3600', 'actions=', 'restart/10000/restart/60000')
}
Start-Service -Name $ServiceName
Get-Service -Name $ServiceName | Format-Table -AutoSize Name, Status, StartType
Invoke-Native $Exe @('status', '--config', $Config, '--state-file', $StateFile)
